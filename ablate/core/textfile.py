"""Reading a user's text files: corpus, eval and task files, study configs, mixture lists, an imported config.json.

How to run (every reader of a file a person wrote goes through here):
    from ablate.core.textfile import decode_text, read_text
    text = read_text(path)                # UTF-8, a leading byte-order mark dropped; UsageError if not UTF-8
    text = decode_text(raw_bytes, path)   # the same for bytes already read (to hash them too)

Why one reader: files saved by common Windows editors start with a UTF-8 byte-order mark (EF BB BF). json.loads
refuses it ("Unexpected UTF-8 BOM") and a tokenizer keeps it as tokens of the first document, so each reader
would need the same fix; "utf-8-sig" drops one leading mark and nothing else (a mark inside the text is text).
Missing or unreadable files raise OSError as `Path.read_bytes` does: callers say which setting named the file.
"""

from __future__ import annotations

from pathlib import Path

from ablate.core.errors import UsageError


def decode_text(raw: bytes, path) -> str:
    """`raw` (the bytes of `path`) as text: UTF-8, a leading byte-order mark dropped."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text (bad byte at offset {e.start})") from None


def read_text(path) -> str:
    """The text of a user's file: UTF-8, a leading byte-order mark dropped."""
    return decode_text(Path(path).read_bytes(), path)
