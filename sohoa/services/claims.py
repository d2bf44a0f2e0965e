"""A claim on an input's content while a run works on it: the same bytes are processed once.

Two ``sohoa run`` of one file, two inbox drops of the same bytes, two workers: whoever comes second
waits for the first to finish, then finds its archive (a duplicate) instead of reading every page
again. Admission alone cannot tell, because neither is archived when both start.

A claim is an object in the archive store, the one store every machine shares:
``claims/<sha256>/<generation>.json``, naming its holder (host, pid, process start time, a random
token, the flow run). Generations only grow and each is written create-only, so of two runs that
take over the same released or dead claim exactly one creates the next generation; the highest
generation is the claim. Its holder renews it (a lease) from a thread while it works, through a store that
fails or hangs too until the lease it last wrote runs out (then the holder has lost it, and says so); a claim whose
lease ran out, or whose holder was on this machine and is gone (or was this process, whose release the
store did not hear), is taken over without a person. Machines' clocks must agree to well within the expiry.
The holder releases it (rewrites it ``released``) once the archive is written and verified, or on
refusal, and on failure from a thread (a failing store must not hold the failure back). Released
claims stay, one small object per distinct input: deleting them would let a slow taker recreate a
lower generation beside a live one.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import AwareDatetime, BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sohoa.kernel.errors import InputRefused, SohoaError
from sohoa.storage import ObjectExists, ObjectNotFound, StorageError, Store

PREFIX = "claims/"
_log = logging.getLogger("sohoa.claims")
_HELD_HERE: set[str] = set()  # tokens of the claims this process holds now: one of its own not here was let go


class ClaimSettings(BaseSettings):
    """How long a claim lives without renewal, how often its holder renews it, how long another run waits
    (``SOHOA_CLAIM_RENEW_S``, ``_EXPIRY_S``, ``_WAIT_S``, ``_POLL_S``). They change when a run goes on, never what
    a step makes: runtime settings, in no step's key."""

    model_config = SettingsConfigDict(env_prefix="SOHOA_CLAIM_", extra="ignore")

    renew_s: float = Field(10.0, gt=0, description="The holder renews its claim this often")
    expiry_s: float = Field(60.0, gt=0, description="A claim not renewed for this long is taken over (its holder died)")
    wait_s: float = Field(7200.0, ge=0, description="A run waits at most this long for another run, alive and renewing its"
                                                    " claim, to finish the same content (a 2,000-page dossier takes about an hour)")
    poll_s: float = Field(1.0, gt=0, description="How often a waiting run looks at the claim again")

    @model_validator(mode="after")
    def _renewed_in_time(self) -> ClaimSettings:
        if self.expiry_s < 2 * self.renew_s:
            raise ValueError(f"claim expiry_s ({self.expiry_s}) must be at least twice renew_s ({self.renew_s})")
        return self


class ClaimTimeout(SohoaError):
    """Another run held the same content for longer than this run may wait (SOHOA_CLAIM_WAIT_S)."""


class Holder(BaseModel):
    """Who works on the content: enough to tell, from this machine, that the process is gone."""

    host: str
    node: str = Field(description="Host, boot and pid namespace: pids compare only within it")
    pid: int
    started: str = Field(description="The process's start time (clock ticks since boot; '' where unknown): a reused pid"
                                     " is another process")
    token: str = Field(description="Random, per claim: two threads of one process are two holders")
    flow_run_id: str | None = None

    def __str__(self) -> str:
        run = f", flow run {self.flow_run_id}" if self.flow_run_id else ""
        return f"pid {self.pid} on {self.host}{run}"


class Claim(BaseModel):
    sha256: str
    generation: int = Field(ge=1)
    holder: Holder
    taken_at: AwareDatetime
    expires_at: AwareDatetime = Field(description="The holder's clock at its last renewal plus the expiry: machines'"
                                                  " clocks must agree to well within the expiry")
    released: bool = False


def holder(flow_run_id: str | None = None) -> Holder:
    """This process (and thread's claim, by its token) as a holder."""
    pid = os.getpid()
    return Holder(host=socket.gethostname(), node=_node(), pid=pid, started=_start_time(pid) or "",
                  token=secrets.token_hex(8), flow_run_id=flow_run_id)


class Held:
    """A claim this run holds: renewed from a thread until released (also as a context manager)."""

    def __init__(self, store: Store, claim: Claim, settings: ClaimSettings, log: Any = _log):
        self.store, self.claim, self.settings, self.log = store, claim, settings, log
        self.lost = False
        self._guard, self._stop = threading.Lock(), threading.Event()
        self._renewer = threading.Thread(target=self._renew_until_stopped, name=f"claim-{claim.sha256[:8]}", daemon=True)
        self._renewer.start()

    def __enter__(self) -> Held:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_exc: object) -> None:
        # a failure may be the store's own (unreachable): report it at once, tell the store when it answers
        self.release(wait=kind is None or issubclass(kind, InputRefused))

    def release(self, wait: bool = True) -> None:
        """Stop renewing and mark the claim released, so a waiting run goes on at once (idempotent); with
        ``wait=False`` the store is told from a thread."""
        if self._stop.is_set():
            return
        self._stop.set()
        if wait:  # still held here until the store says released: another run of this process waits, not takes over
            try:
                self._tell_released()
            finally:
                _HELD_HERE.discard(self.claim.holder.token)
        else:  # let go in this process at once, even if the store cannot be told
            _HELD_HERE.discard(self.claim.holder.token)
            threading.Thread(target=self._tell_released, name=f"release-{self.claim.sha256[:8]}", daemon=True).start()

    def _tell_released(self) -> None:
        self._renewer.join()
        with self._guard:
            if self.lost:
                return
            try:
                self._write(self.claim.model_copy(update={"released": True}))
            except StorageError as exc:  # the lease runs out on its own: a waiting run takes over then
                self.log.warning("claim release on %s failed: %s", self.claim.sha256[:12], exc)

    def _renew_until_stopped(self) -> None:
        """Renew every ``renew_s``. A store that fails or hangs (StorageUnavailable) is tried again until the lease
        it last accepted runs out; then another run may take the claim over, so this one stops renewing."""
        while not self._stop.wait(self.settings.renew_s):
            with self._guard:
                if self._stop.is_set() or self.lost:
                    return
                try:
                    self._renew()
                except StorageError as exc:
                    self._renewal_failed(exc)

    def _renewal_failed(self, exc: StorageError) -> None:
        sha, until = self.claim.sha256[:12], self.claim.expires_at.isoformat(timespec="seconds")
        if datetime.now(UTC) < self.claim.expires_at:
            self.log.warning("claim renewal on %s failed, trying again until its lease ends at %s: %s", sha, until, exc)
            return
        self.lost = True
        self.log.warning("the claim on %s is lost: its lease ended at %s while the store failed (%s); another run"
                         " may take it over and process the same content", sha, until, exc)

    def _renew(self) -> None:
        """Push the lease forward, unless another run took the claim over (this one stalled past its expiry)."""
        claim = self.claim
        if self.store.exists(_key(claim.sha256, claim.generation + 1)):
            self.lost = True
            self.log.warning("the claim on %s was taken over while this run held it: it may be processed twice",
                             claim.sha256[:12])
            return
        renewed = claim.model_copy(update={"expires_at": _expiry(self.settings)})
        self._write(renewed)
        self.claim = renewed  # only once the store holds it: the lease the store has is the one that counts

    def _write(self, claim: Claim) -> None:
        self.store.put_bytes(_key(claim.sha256, claim.generation), claim.model_dump_json().encode(),
                             content_type="application/json")


def take(store: Store, sha256: str, me: Holder, settings: ClaimSettings | None = None, log: Any = _log) -> Held:
    """Hold the claim on ``sha256``: at once when nobody holds it (or its holder is gone), else after waiting,
    bounded by ``wait_s`` (ClaimTimeout), for the live holder to release it. The run that held it before may
    have archived the content: look again once it is held."""
    settings = settings or ClaimSettings()
    deadline, awaited = time.monotonic() + settings.wait_s, None
    while True:
        generation, current = _highest(store, sha256)
        why = _free(current) if generation else "free"
        if why:
            claim = _create(store, sha256, generation + 1, me, settings)
            if claim is not None:
                if why not in ("free", "released"):
                    was = current.holder if current else "an unknown holder"
                    log.warning("took over the claim on %s from %s: %s", sha256[:12], was, why)
                return Held(store, claim, settings, log=log)
            continue  # another run created that generation first: look again
        if awaited != current.holder.token:
            awaited = current.holder.token
            log.info("waiting for %s, which is processing the same content (sha256 %s), to finish", current.holder,
                     sha256[:12])
        if time.monotonic() >= deadline:
            raise ClaimTimeout(f"waited {settings.wait_s:.0f} s for {current.holder}, still processing the same content"
                               f" (sha256 {sha256[:12]})")
        time.sleep(settings.poll_s)


def _free(claim: Claim | None) -> str | None:
    """Why the highest claim no longer holds (None: it does, its holder is working)."""
    if claim is None:
        return "its claim object is unreadable"
    if claim.released:
        return "released"
    if claim.expires_at <= datetime.now(UTC):
        return f"its lease expired at {claim.expires_at.isoformat(timespec='seconds')}"
    if _gone(claim.holder):
        return "that process is gone"
    return None


def _highest(store: Store, sha256: str) -> tuple[int, Claim | None]:
    """The highest generation of the content's claim and the claim (0 when there is none; None when unreadable)."""
    generations = [int(name) for info in store.list(f"{PREFIX}{sha256}/")
                   if (name := info.key.rsplit("/", 1)[-1].removesuffix(".json")).isdigit()]
    if not generations:
        return 0, None
    top = max(generations)
    try:
        return top, Claim.model_validate_json(store.get_bytes(_key(sha256, top)))
    except (ObjectNotFound, ValueError):  # a ValidationError is a ValueError
        return top, None


def _create(store: Store, sha256: str, generation: int, me: Holder, settings: ClaimSettings) -> Claim | None:
    """The claim at ``generation``, created here; None when another run created it first."""
    claim = Claim(sha256=sha256, generation=generation, holder=me, taken_at=datetime.now(UTC), expires_at=_expiry(settings))
    _HELD_HERE.add(me.token)  # before it can be read: a claim of this process's whose token is missing was let go
    try:
        store.put_bytes(_key(sha256, generation), claim.model_dump_json().encode(), content_type="application/json",
                        create_only=True)
    except BaseException as exc:
        _HELD_HERE.discard(me.token)
        if isinstance(exc, ObjectExists):
            return None
        raise
    return claim


def _key(sha256: str, generation: int) -> str:
    return f"{PREFIX}{sha256}/{generation:08d}.json"


def _expiry(settings: ClaimSettings) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=settings.expiry_s)


def _gone(other: Holder) -> bool:
    """The holder ran on this machine (same host, boot and pid namespace) and its process has ended, or it was this
    process, which let it go without the store hearing of it (the release failed: the store was unreachable)."""
    if other.node != _node():
        return False  # another machine: only its lease tells
    started = _start_time(other.pid)
    if started is None or (other.started and started and started != other.started):
        return True
    return other.pid == os.getpid() and other.token not in _HELD_HERE


def _node() -> str:
    """This host, boot and pid namespace: containers on one host share the boot id but not the pid namespace."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{boot}/{namespace}"


def _start_time(pid: int) -> str | None:
    """A process's start time ('' where /proc cannot say); None when there is no such process (or a zombie)."""
    stat = _read(f"/proc/{pid}/stat")
    if stat:
        fields = stat.rsplit(")", 1)[1].split()  # the name before ')' may hold spaces
        return None if fields[0] in ("Z", "X") else fields[19]
    if Path("/proc/self/stat").exists():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return ""


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
