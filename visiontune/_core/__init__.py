"""The ground floor: what every other part of visiontune may import and which imports nothing above it.

errors (the exception family), console (notices and tables), io (the one atomic writer), paths (the cache
folder), figures (the figure wrapper every plot returns), version, distributed (torchrun facts), allocator
(glibc malloc settings) and failpoints (deliberate crashes for the crash tests).
"""
