"""Devices and apps kept on disk between ``offpay`` commands.

One file per device, ``drive/devices/<name>.card`` or ``<name>.terminal``, owner-only (0600),
replaced atomically on every save. It holds two parts, as a secure element does:

* ``hardware``: what the chip keeps inside itself across a power cut: its private key (PKCS #8
  PEM), the key its memory is sealed with, its monotonic counter, the root it trusts (and a
  terminal module's record-sealing key). In a real device none of this can be read out; here
  the file's owner-only mode stands in for the chip.
* ``memory``: the device's state (balance, PIN digest, log, limits...) exactly as its
  :class:`~offpay.device.memory.SealedMemory` sealed it (AES-GCM). It is never written in the
  clear; a copy written back later is refused by the device as rolled back.

A PoS app's records are sealed by its module already; they go to ``drive/apps/<shop>.pos``.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from offpay.crypto.keys import Signer, algorithm_of
from offpay.device.image import DeviceImage, MemoryImage
from offpay.errors import OffpayError


class VaultError(OffpayError):
    """A device or app file that is missing, damaged or not this kind's."""

    code = "drive.device_file"


def write_private(path: Path, text: str) -> None:
    """``text`` into ``path``, owner-only, all or nothing (a crash leaves the old file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: object) -> bytes | None:
    return None if text is None else base64.b64decode(str(text), validate=True)


def save_image(path: Path, image: DeviceImage) -> None:
    key = image.signer.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    record = {
        "hardware": {
            "private_key": key.decode(),
            "memory_key": _b64(image.memory.key),
            "counter": image.memory.counter,
            "root": _b64(image.root),
            "record_key": _b64(image.record_key),
        },
        "memory": _b64(image.memory.blob),
    }
    write_private(path, json.dumps(record, indent=1) + "\n")


def load_image(path: Path) -> DeviceImage:
    try:
        record = json.loads(path.read_text())
        hw = record["hardware"]
        key = serialization.load_pem_private_key(hw["private_key"].encode(), None)
        algorithm_of(key)
        memory_key = _unb64(hw["memory_key"])
        if memory_key is None:
            raise ValueError("no memory key")
        return DeviceImage(
            Signer(key),  # type: ignore[arg-type]
            MemoryImage(memory_key, int(hw["counter"]), _unb64(record["memory"])),
            _unb64(hw["root"]),
            _unb64(hw["record_key"]),
        )
    except FileNotFoundError:
        raise VaultError(f"the device file {path.name} is missing") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, OffpayError) as exc:
        raise VaultError(f"the device file {path.name} is damaged: {exc}") from None


def save_records(path: Path, records: list[bytes]) -> None:
    write_private(path, json.dumps([_b64(r) for r in records]) + "\n")


def load_records(path: Path) -> list[bytes]:
    if not path.exists():
        return []
    try:
        return [base64.b64decode(r, validate=True) for r in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError) as exc:
        raise VaultError(f"the app file {path.name} is damaged: {exc}") from None
