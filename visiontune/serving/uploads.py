"""What a POST /predict carries: files in the multipart field `file` (repeated for several), or one raw image
body. Everything else is answered with an ApiError that says how to send an image."""

from __future__ import annotations

from dataclasses import dataclass

from .images import ApiError, display_name

RAW_TYPES = ("image/", "application/octet-stream")


@dataclass
class Upload:
    """One uploaded image: the name used in messages, its bytes, and the client's file name (if it sent one)."""

    name: str
    data: bytes
    filename: str | None = None


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


async def read_uploads(request, max_files: int) -> list[Upload]:
    """The images of a /predict request, in the order sent. The body arrives through the size guard, so a
    body over --max-bytes stops here with BodyTooLarge before it is all read."""
    media = media_type(request.headers.get("content-type", ""))
    curl = f"curl -F file=@cat.jpg {str(request.base_url).rstrip('/')}/predict"
    if media == "multipart/form-data":
        return await _multipart(request, max_files, curl)
    if media.startswith(RAW_TYPES):
        data = await request.body()
        if not data:
            raise ApiError(400, "empty_body", f"The request body is empty. Send the image's bytes, or a form "
                                              f"with the image in the field 'file' ({curl}).")
        return [Upload("the request body", data)]
    if not media:
        raise ApiError(415, "unsupported_media_type", f"The request has no Content-Type. Send a multipart form "
                                                      f"with the image in the field 'file' ({curl}), or the raw "
                                                      f"image with Content-Type image/jpeg, image/png, ...")
    raise ApiError(415, "unsupported_media_type", f"Content-Type {media[:80]!r} is not accepted here. Send a "
                                                  f"multipart form with the image in the field 'file' ({curl}), "
                                                  f"or the raw image with Content-Type image/jpeg, image/png, ...")


async def _multipart(request, max_files: int, curl: str) -> list[Upload]:
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException

    try:
        form = await request.form(max_files=max_files, max_fields=max_files + 32)
    except HTTPException as e:  # Starlette's message for a malformed form or one over its counts
        if "Too many files" in str(e.detail):
            raise ApiError(413, "too_many_files", f"More than {max_files} files in one request (--max-files). "
                                                  f"Send them in several requests.") from None
        raise ApiError(400, "bad_multipart", f"The multipart form cannot be read: {e.detail}") from None
    try:
        parts = form.getlist("file")
        if not parts:
            fields = sorted({k for k, _ in form.multi_items()})
            got = f"it has the fields {', '.join(repr(f[:40]) for f in fields[:10])}" if fields else "it has no fields"
            raise ApiError(400, "no_file", f"The form has no field 'file' ({got}). Put the image in the field "
                                           f"'file' ({curl}); repeat the field for several images.")
        uploads = []
        for i, part in enumerate(parts):
            if not isinstance(part, UploadFile):
                raise ApiError(400, "not_a_file", "The field 'file' holds text, not a file. Upload the file itself "
                                                  "(with curl: -F file=@cat.jpg, with the @).")
            name = display_name(part.filename, i)
            uploads.append(Upload(name, await part.read(), part.filename))
        return uploads
    finally:
        await form.close()
