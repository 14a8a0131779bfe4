"""Clean the data: find label errors, duplicates, leaks and odd files (`find_issues`), review them on a local
page (`review`), carry out the decisions with undo (`apply_decisions`, `undo_decisions`).

    issues = find_issues(data)          # ranked table; nothing in the data folder changes
    session = review(issues)            # the page: keep / delete / relabel, saved to journal.jsonl at once
    apply_decisions(session.folder)     # moves files (relabel: other class folder; delete: the clean folder's trash/)
    undo_decisions(session.folder)      # puts everything back
"""

from ..runs.cleandir import CleanDir, newest_clean_dir
from .confident import LabelIssues, confident_joint, find_label_issues, find_multilabel_issues
from .csvlabels import CsvLabels
from .find import class_balance, find_issues, load_data
from .fix import ApplyLockedError, ApplyPlan, apply_decisions, plan_apply, undo_decisions
from .issues import Issue, Issues
from .journal import Journal, ReviewError
from .review import ReviewSession, review
from .server import ReviewServer

__all__ = [
    "ApplyLockedError",
    "ApplyPlan",
    "CleanDir",
    "CsvLabels",
    "Issue",
    "Issues",
    "Journal",
    "LabelIssues",
    "ReviewError",
    "ReviewServer",
    "ReviewSession",
    "apply_decisions",
    "class_balance",
    "confident_joint",
    "find_issues",
    "find_label_issues",
    "find_multilabel_issues",
    "load_data",
    "newest_clean_dir",
    "plan_apply",
    "review",
    "undo_decisions",
]
