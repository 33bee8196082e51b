"""The storage boundary: Protocols and value types.

Protocol handlers (smtpd, imapd, pop3d, delivery, cli) only ever see these. The embedded backend
(`sqlite.py`: SQLite in WAL mode + message files) implements them now; a PostgreSQL backend will
implement the same Protocols for several nodes, so:
- every operation is async;
- UIDs and MODSEQs are allocated inside the store's own transaction;
- nothing here assumes shared process memory (the change feed is an interface, not a global).

Metadata (this module's `Store`) and message bodies (`BlobStore`) are separate roles so that bodies
can later live in PostgreSQL or an object store while metadata stays relational.
"""

from __future__ import annotations

import enum
import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from surat.message.info import MessageInfo

# The six mailboxes every new account gets, with their RFC 6154 special-use attribute.
DEFAULT_MAILBOXES: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)

HIERARCHY_DELIMITER = "/"
# Longest mailbox name, in UTF-8 octets; also bounds the work of matching a LIST pattern against it.
MAX_MAILBOX_NAME_OCTETS = 1000


class StoreError(Exception):
    """Base of errors the store raises on purpose; protocol layers map them to replies."""


class NotFound(StoreError):
    """The named domain, account, alias, mailbox, message or queue entry does not exist."""


class AlreadyExists(StoreError):
    """Creating something that exists already (domain, account, alias, mailbox)."""


class InvalidName(StoreError):
    """A mailbox or address that is not acceptable (empty, bad hierarchy, path tricks)."""


class QuotaExceeded(StoreError):
    """Delivering or appending would exceed the account's quota (RFC 9208)."""


class InvalidScript(StoreError):
    """A Sieve script that does not parse; the message is the parser's "line L, column C: why"."""


class ScriptActive(StoreError):
    """Deleting the active Sieve script (RFC 5804 §2.10: deactivate it first)."""


# ----------------------------------------------------------------------------------------- directory


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    address: str  # lower-cased local@domain, domain in A-label (IDNA) form
    quota_bytes: int | None = None  # None: unlimited
    is_admin: bool = False  # may log into the admin console (`surat user admin`)


# lookup_recipient's bound on candidates: the address, its base address (without +tag) and the catch-all.
MAX_LOOKUP_CANDIDATES = 3


@dataclass(frozen=True, slots=True)
class RecipientLookup:
    """What SMTP's RCPT asks of the directory about one address, read at once (`lookup_recipient`;
    issue 12: one round trip where three separate reads took three on PostgreSQL)."""

    domain_is_local: bool
    # Of the candidate addresses asked for, as the caller spelled them: their alias targets (as
    # `alias_targets` returns them; absent when none) and their accounts (absent when none).
    alias_targets: dict[str, list[str]] = field(default_factory=dict)
    accounts: dict[str, Account] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueueSummary:
    entries: int
    oldest: datetime | None  # created_at of the oldest entry; None when the queue is empty


@dataclass(frozen=True, slots=True)
class CachedStsPolicy:
    """An MTA-STS policy as fetched (RFC 8461 §5.1), kept so that it outlives restarts: an attacker who
    blocks the TXT lookup or the HTTPS fetch later cannot downgrade a policy still in its max_age.

    Times are epoch seconds, so that every process and node reads them alike."""

    domain: str  # the policy domain, lower-case
    policy_id: str  # the TXT record's id= when the policy was fetched
    policy: str  # the policy file as fetched (parsed again by surat.mailauth.mtasts on use)
    fetched_at: float
    expires_at: float  # fetched_at + max_age


@dataclass(frozen=True, slots=True)
class TlsResultKey:
    """What TLS-RPT (RFC 8460 §4.4) counts sessions by: one policy of one policy domain on one UTC day,
    and for a failure its failure-details fields. A successful session has `result_type` "" and no
    details. Aggregation (§4.4: identical failure details are one entry with a count) is the store's
    sum over equal keys, so that every process and node adds to the same counts."""

    day: str  # "YYYY-MM-DD", UTC
    policy_domain: str  # lower-case
    policy_type: str  # "sts", "tlsa" or "no-policy-found" (RFC 8460 §4.4 policy-type)
    policy_string: str  # the policy's lines (§4.4 policy-string), joined with "\n"
    mx_host: str  # the policy's MX patterns (§4.4 mx-host), joined with "\n"
    result_type: str = ""  # "": success; else an RFC 8460 §4.3 result type
    sending_mta_ip: str = ""
    receiving_mx_hostname: str = ""
    receiving_ip: str = ""
    failure_reason_code: str = ""


@dataclass(frozen=True, slots=True)
class TlsResultCount:
    key: TlsResultKey
    sessions: int


@dataclass(frozen=True, slots=True)
class AuthClientState:
    """What the login-failure limiter (surat.authlimit) remembers of one client (an IP, or an IPv6 /64).

    Times are epoch seconds, so that every process and node reads them alike."""

    key: str
    ip: str  # the address last seen failing (the key may be a network)
    failures: tuple[float, ...] = ()  # recent failures, within the policy's window
    blocked_until: float = 0.0
    strikes: int = 0  # blocks so far; the next one lasts longer
    last_failure: float = 0.0


@dataclass(frozen=True, slots=True)
class ScramCredentials:
    """RFC 5802 §3 stored values for one hash (SCRAM-SHA-256, RFC 7677)."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


@dataclass(frozen=True, slots=True)
class Credentials:
    password_hash: str  # argon2id encoded hash
    scram_sha256: ScramCredentials | None = None


# At most this many app passwords per account: bounds the list pages and the rows a user can make.
MAX_APP_PASSWORDS = 50
MAX_APP_PASSWORD_NAME = 64  # characters of an app password's name


class LimitReached(StoreError):
    """Creating one more of something whose number is bounded (MAX_APP_PASSWORDS)."""


@dataclass(frozen=True, slots=True)
class AppPassword:
    """A named secret an account's mail clients log in with (IMAP, POP3, SMTP AUTH PLAIN/LOGIN),
    never the web login; revoked by deleting it. The secret itself is not here (surat.apppasswords)."""

    id: int
    account_id: int
    name: str
    created_at: datetime
    last_used: datetime | None = None


@dataclass(frozen=True, slots=True)
class Alias:
    source: str  # "user@domain" or "@domain" (catch-all)
    target: str  # an address; local or remote


# ----------------------------------------------------------------------------------------- mailboxes


@dataclass(frozen=True, slots=True)
class Mailbox:
    id: int
    account_id: int
    name: str  # UTF-8, "/" as hierarchy delimiter; "INBOX" is always spelled so
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    special_use: str | None = None
    subscribed: bool = True


@dataclass(frozen=True, slots=True)
class MailboxStatus:
    mailbox: Mailbox
    messages: int
    unseen: int
    size: int  # RFC 8438 STATUS=SIZE: sum of message sizes
    deleted: int
    recent: int = 0  # RFC 3501 §6.3.10: messages no session has claimed as \Recent yet


# ----------------------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """What an IMAP session keeps per message, and POP3 needs for a maildrop."""

    uid: int
    modseq: int
    flags: frozenset[str]  # system flags with backslash ("\\Seen"), keywords as given
    size: int
    internal_date: datetime


@dataclass(frozen=True, slots=True)
class MessageBlob:
    """Where a message's octets are, without its MessageInfo: all a POP3 maildrop needs."""

    uid: int
    size: int
    blob_id: str
    # Whether the last line ends with CRLF (true for an empty message). POP3 sizes count the CRLF
    # that RETR adds to an unterminated last line (RFC 1939 §3, §5), so a login needs this for
    # every message; the store records it at delivery so that nobody reads message files for it.
    ends_with_crlf: bool


@dataclass(frozen=True, slots=True)
class MessageRecord:
    mailbox_id: int
    uid: int
    modseq: int
    flags: frozenset[str]
    size: int
    internal_date: datetime
    blob_id: str
    info: MessageInfo  # ENVELOPE/BODYSTRUCTURE/header data computed once at delivery


class FlagMode(enum.Enum):
    SET = "set"  # STORE FLAGS
    ADD = "add"  # STORE +FLAGS
    REMOVE = "remove"  # STORE -FLAGS


@dataclass(frozen=True, slots=True)
class FlagUpdate:
    uid: int
    flags: frozenset[str]
    modseq: int


@dataclass(frozen=True, slots=True)
class StoreFlagsResult:
    updated: list[FlagUpdate]
    # RFC 7162 §3.1.3: UIDs whose MODSEQ was above UNCHANGEDSINCE, left untouched
    modified: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CopyResult:
    uidvalidity: int  # of the destination, for RFC 4315 COPYUID
    pairs: list[tuple[int, int]]  # (source uid, destination uid)


@dataclass(frozen=True, slots=True)
class MailboxChanges:
    """RFC 7162 QRESYNC: what changed in a mailbox after a MODSEQ."""

    changed: list[MessageSummary]
    vanished: list[int]  # UIDs expunged with a MODSEQ above the one asked about
    highestmodseq: int


# ------------------------------------------------------------------------------ delivery and queue


@dataclass(frozen=True, slots=True)
class MailboxTarget:
    """One local copy of a delivered message."""

    account_id: int
    mailbox: str = "INBOX"
    flags: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class OutboundRecipient:
    address: str
    notify: tuple[str, ...] = ()  # RFC 3461 NOTIFY values (SUCCESS, FAILURE, DELAY, NEVER); () = default
    orcpt: str | None = None  # RFC 3461 ORCPT, as "addr-type;xtext"


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """Remote recipients of one received message, to be relayed from the queue."""

    sender: str  # envelope sender, "" for the null reverse-path <>
    recipients: tuple[OutboundRecipient, ...]
    envid: str | None = None  # RFC 3461 ENVID
    ret: str | None = None  # RFC 3461 RET: "FULL" or "HDRS"
    smtputf8: bool = False
    eight_bit: bool = False  # BODY=8BITMIME (or BINARYMIME) was declared
    authenticated_user: str | None = None  # who submitted it, if anyone
    # Bytes at the start of the stored message that are for local copies only (Return-Path).
    body_offset: int = 0
    # DKIM-Signature fields to put on top of the message at every attempt (b"": none); None: not
    # signed yet, the queue runner decides at the first attempt.
    dkim_signature: bytes | None = None
    # RFC 8689 REQUIRETLS: received with MAIL FROM ... REQUIRETLS (over TLS); relayed only over
    # verified TLS to a next hop that takes REQUIRETLS too (surat.delivery.queue)
    requiretls: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    """One accepted SMTP transaction, ready to be made durable.

    The message is either in `content` (small messages: the store writes the blob itself, off the
    event loop) or in `staged` (from `BlobStore.stage()`), which `Store.deliver` takes over whatever
    happens: the caller must not write to or abort it afterwards. Either holds the complete message
    as it is to be stored in local mailboxes: Return-Path first, then our Received header, then the
    message with CRLF line endings.
    """

    staged: StagedBlob | None
    size: int
    internal_date: datetime
    local: tuple[MailboxTarget, ...] = ()
    remote: OutboundMessage | None = None
    info: MessageInfo | None = None  # computed by the store when None
    content: bytes | None = None  # the message itself, instead of staged


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    # (account_id, mailbox_id, uid) for each local copy, in the order of Delivery.local
    local: list[tuple[int, int, int]]
    queue_id: str | None


class RecipientState(enum.Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # permanently; a DSN is owed unless NOTIFY says otherwise
    RELAYED = "relayed"  # handed to a next hop that supports DSN (RFC 3461 §6.2.1)


@dataclass(frozen=True, slots=True)
class QueueRecipient:
    address: str
    state: RecipientState
    notify: tuple[str, ...] = ()
    orcpt: str | None = None
    last_reply: str | None = None  # the last reply or error, e.g. "550 5.1.1 no such user"
    delay_notified: bool = False  # a delay DSN (RFC 3464 Action: delayed) was sent for it


@dataclass(frozen=True, slots=True)
class QueueAttempt:
    number: int
    started_at: datetime
    host: str | None
    result: str | None  # None while in flight


@dataclass(frozen=True, slots=True)
class RecipientUpdate:
    """The outcome of an attempt for one recipient, by its index in `QueueEntry.recipients`."""

    index: int
    state: RecipientState
    last_reply: str | None
    # True: a delay notice went out for this recipient with this attempt (never reset to False).
    delay_notified: bool = False


@dataclass(frozen=True, slots=True)
class QueueEntry:
    id: str
    sender: str
    recipients: tuple[QueueRecipient, ...]
    size: int
    blob_id: str
    body_offset: int
    created_at: datetime
    next_attempt_at: datetime
    attempts: tuple[QueueAttempt, ...] = ()
    envid: str | None = None
    ret: str | None = None
    smtputf8: bool = False
    eight_bit: bool = False
    authenticated_user: str | None = None
    dkim_signature: bytes | None = None  # see OutboundMessage.dkim_signature
    requiretls: bool = False  # see OutboundMessage.requiretls


# ----------------------------------------------------------------------------------------- sieve

# RFC 5804 §1.6: a script name is at least one character, no control characters; ManageSieve servers
# accept at least 128. Longer names are refused (InvalidName), so a name never grows a row unbounded.
MAX_SIEVE_SCRIPT_NAME = 128
# The longest vacation period a script can ask for (surat.sieve: at most a year, RFC 5230 §4.1 lets the
# site bound it): vacation memory older than this can never suppress a reply and is pruned.
MAX_VACATION_MEMORY_SECONDS = 366 * 86400


@dataclass(frozen=True, slots=True)
class SieveScript:
    """One of an account's named Sieve scripts (RFC 5228; RFC 5804's model: one active at most)."""

    name: str
    text: str
    active: bool
    # Changes at every put, never reused: a delivery caches the parsed script by (account, name, version).
    version: int
    created_at: datetime
    updated_at: datetime


# ----------------------------------------------------------------------------------------- change feed


class ChangeKind(enum.Enum):
    MESSAGES_ADDED = "messages_added"
    FLAGS_CHANGED = "flags_changed"
    MESSAGES_EXPUNGED = "messages_expunged"
    MAILBOX_CREATED = "mailbox_created"
    MAILBOX_DELETED = "mailbox_deleted"
    MAILBOX_RENAMED = "mailbox_renamed"
    QUEUE_CHANGED = "queue_changed"  # account_id 0: the outbound queue has new or due work
    # The subscriber fell too far behind and changes were dropped: resynchronise from the store
    # (IMAP: re-read the mailbox; the session cannot trust its view any more).
    OVERFLOW = "overflow"


@dataclass(frozen=True, slots=True)
class Change:
    kind: ChangeKind
    account_id: int
    mailbox_id: int | None = None
    uids: tuple[int, ...] = ()
    modseq: int = 0


class Subscription(Protocol):
    """Changes of one account, published after commit, in commit order."""

    def __aiter__(self) -> AsyncIterator[Change]: ...

    def pending(self) -> list[Change]:
        """Changes that arrived since the last call, without waiting (for IMAP between commands)."""
        ...

    def close(self) -> None: ...


class ChangeFeed(Protocol):
    def subscribe(self, account_id: int) -> Subscription: ...

    def publish(self, changes: Iterable[Change]) -> None: ...


# ----------------------------------------------------------------------------------------- blobs


class StagedBlob(Protocol):
    """A message being written into the blob area, not part of the store yet.

    Callers `write` the message in pieces (never all of it in memory), then hand the object to
    `Store.deliver` (in a `Delivery`) or `Store.append`, which take it over atomically with the
    message's rows; or they `abort` it. A crash between the two leaves a leftover that the store's
    `open()` removes. A file backend stages in a file of its own spool area; a database backend in
    chunk rows or a large object; an object store in a multipart upload.
    """

    @property
    def size(self) -> int:
        """Octets written so far."""
        ...

    async def write(self, data: bytes) -> None:
        """Append `data`; StoreError once the staged blob was aborted or taken over."""
        ...

    async def read(self, offset: int = 0) -> bytes:
        """What was written, from `offset` on, into memory (the caller bounds it: the message size
        limit). For checks made before the hand-over (SPF/DKIM/DMARC, DKIM signing)."""
        ...

    def abort(self) -> None:
        """Discard what was written. Never blocks and never raises: safe in `finally` and on
        cancellation. Does nothing once the store has taken the blob over (or after an abort)."""
        ...


class BlobReader(Protocol):
    """One stored blob, opened for reads at any offsets; the caller closes it."""

    @property
    def size(self) -> int: ...

    async def read(self, offset: int, length: int) -> bytes:
        """`length` octets from `offset`; fewer only at the end of the blob."""
        ...

    def stream(self, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """The octets from `offset` (up to `length` of them, None: to the end) in chunks of a size
        the backend picks, bounded so that one chunk never holds the event loop long."""
        ...

    def close(self) -> None: ...


class BlobStore(Protocol):
    """Message bodies, immutable once stored, addressed by an opaque id. The only code that knows
    where message bytes live: nothing outside the store sees a path, a file or a table."""

    def stage(self) -> StagedBlob:
        """A new staged blob to write a message into (see StagedBlob)."""
        ...

    async def open(self, blob_id: str) -> BlobReader:
        """NotFound when there is no such blob (e.g. expunged since its id was read)."""
        ...

    async def read(self, blob_id: str, offset: int = 0, length: int | None = None) -> bytes:
        """A range of a blob into memory (None: to the end; the caller bounds the size); NotFound."""
        ...

    async def read_many(self, ranges: Sequence[tuple[str, int]]) -> list[bytes | None]:
        """(blob id, offset) -> the blob from offset to its end, for many small blobs in one go
        (the relay queue's batch); None for a blob that is gone or unreadable."""
        ...


# ----------------------------------------------------------------------------------------- shared keys


# The length of a new installation secret; a stored one shorter than this is not used.
INSTALLATION_SECRET_BYTES = 32
# The DKIM selectors a store keeps: `s` + creation date + `r` (RSA) or `e` (Ed25519) + an optional
# counter (surat.delivery.dkim.selector_for): one DNS label (RFC 6376 §3.1), dated so that the newest
# key is the greatest, and safe as a file name.
DKIM_SELECTOR_RE = re.compile(r"^s(\d{8})([re])(\d*)$")


@dataclass(frozen=True, slots=True)
class StoredDkimKey:
    """A DKIM signing key as the store keeps it; `surat.delivery.dkim` makes and parses them."""

    domain: str  # A-label, lower case, no trailing dot
    selector: str
    algorithm: str  # "rsa" or "ed25519" (DkimAlgorithm's values)
    private_pem: bytes = field(repr=False)  # PKCS#1 (RSA) or PKCS#8 (Ed25519), unencrypted
    created_at: datetime  # when it was made; a key file reports its modification time


class KeyStore(Protocol):
    """What every node of one installation must hold alike (issue 12): the installation secret and
    the DKIM signing keys. Each backend keeps them where its other data is: the SQLite store in files
    of the data directory, the PostgreSQL store in the database every node shares."""

    async def installation_secret(self) -> bytes:
        """The installation's secret (at least INSTALLATION_SECRET_BYTES), created at the first call.
        Two processes or nodes calling at once get the same one: SCRAM's fake salts for unknown users
        derive from it, and two secrets would tell which users exist."""
        ...

    async def dkim_keys(self, domain: str) -> list[StoredDkimKey]:
        """Every key of `domain` (A-label), in selector order; [] when it has none."""
        ...

    async def add_dkim_key(self, key: StoredDkimKey, *, only_first_of_algorithm: bool = False) -> bool:
        """Store `key`. A selector of the domain is never
        replaced: its public half may be published already (AlreadyExists). With
        `only_first_of_algorithm`, nothing is stored when the domain has a key of that algorithm
        already (False is returned), atomically across processes and nodes: two nodes making a new
        domain's keys at once end with one key per algorithm."""
        ...

    def dkim_location(self, domain: str) -> str:
        """Where `domain`'s keys are kept, for the operator (a directory, or the database)."""
        ...


# ----------------------------------------------------------------------------------------- the store


class Store(Protocol):
    @property
    def blobs(self) -> BlobStore: ...

    @property
    def changes(self) -> ChangeFeed: ...

    @property
    def keys(self) -> KeyStore: ...

    async def open(self) -> None:
        """Create or migrate the schema, recover from a crash (staged leftovers and blobs no row
        refers to), start workers."""
        ...

    async def close(self) -> None: ...

    # -- domains
    async def add_domain(self, name: str) -> None: ...
    async def delete_domain(self, name: str) -> None: ...
    async def list_domains(self) -> list[str]: ...
    async def is_local_domain(self, name: str) -> bool: ...

    # -- accounts (creating one creates DEFAULT_MAILBOXES too)
    async def add_account(self, address: str, credentials: Credentials) -> Account: ...
    async def delete_account(self, address: str) -> None: ...
    async def get_account(self, address: str) -> Account | None: ...
    async def get_account_by_id(self, account_id: int) -> Account | None: ...
    async def list_accounts(self, domain: str | None = None) -> list[Account]: ...
    async def get_credentials(self, address: str) -> tuple[Account, Credentials] | None: ...
    async def set_credentials(self, address: str, credentials: Credentials) -> None: ...
    async def set_quota(self, address: str, quota_bytes: int | None) -> None: ...
    async def set_admin(self, address: str, is_admin: bool) -> None: ...
    async def account_usage(self, account_id: int) -> int:
        """Bytes used by all messages of the account (RFC 9208 STORAGE)."""
        ...

    # -- app passwords (surat.apppasswords makes and checks the secrets; the store keeps digests)
    async def add_app_password(self, account_id: int, name: str, digest: str) -> AppPassword:
        """NotFound for a missing account, AlreadyExists for a name the account uses already,
        LimitReached beyond MAX_APP_PASSWORDS."""
        ...

    async def list_app_passwords(self, account_id: int) -> list[AppPassword]:
        """By name."""
        ...

    async def delete_app_password(self, account_id: int, name: str) -> None:
        """NotFound if the account has no app password of that name."""
        ...

    async def find_app_password(self, address: str, digest: str) -> tuple[Account, AppPassword] | None:
        """The account `address` and its app password with `digest`, if any."""
        ...

    async def app_password_used(self, app_password_id: int, when: datetime) -> None:
        """Record a login with it (nothing happens if it was revoked meanwhile)."""
        ...

    # -- login-failure limiting (surat.authlimit), shared by every process using this store
    async def get_auth_client(self, key: str) -> AuthClientState | None: ...
    async def update_auth_client(
        self,
        key: str,
        update: Callable[[AuthClientState | None], AuthClientState | None],
        *,
        forget_before: float,
    ) -> AuthClientState | None:
        """Replace the record of `key` by `update(current)` (None deletes it) in one transaction, and
        forget the records whose last failure and block end are both before `forget_before`."""
        ...

    async def list_auth_clients(self, blocked_after: float) -> list[AuthClientState]:
        """Records blocked beyond the time `blocked_after`, the longest block first."""
        ...

    # -- per-user sending limits (surat.smtpd.ratelimit), shared by every process using this store
    async def sending_totals(self, user: str, since: float) -> tuple[int, int]:
        """Messages `user` sent after the time `since` (epoch seconds), and their recipients."""
        ...

    async def record_sending(self, user: str, at: float, recipients: int, *, forget_before: float) -> None:
        """Record one message of `user` to `recipients` recipients at `at`, and forget every user's
        messages sent before `forget_before`, in one transaction."""
        ...

    # -- the MTA-STS policy cache (surat.delivery.stspolicies), shared by every process using this store
    async def get_sts_policy(self, domain: str) -> CachedStsPolicy | None:
        """The cached policy of `domain` (expired or not), None when none was cached."""
        ...

    async def put_sts_policy(self, policy: CachedStsPolicy, *, forget_before: float) -> None:
        """Cache `policy` in place of the domain's previous one, and forget every domain's policy
        that expired before `forget_before`, in one transaction."""
        ...

    # -- Sieve scripts (surat.delivery.sieve runs the active one at final delivery)
    async def put_sieve_script(self, account_id: int, name: str, text: str) -> SieveScript:
        """Create or replace the script `name` of the account, keeping whether it is active. The text is
        parsed first: InvalidScript with the parser's message when it does not parse; InvalidName for a
        bad name; NotFound without such an account."""
        ...

    async def get_sieve_script(self, account_id: int, name: str) -> SieveScript | None: ...
    async def list_sieve_scripts(self, account_id: int) -> list[SieveScript]:
        """Every script of the account, by name."""
        ...

    async def activate_sieve_script(self, account_id: int, name: str | None) -> None:
        """Make `name` the account's one active script (None: no script active). NotFound."""
        ...

    async def delete_sieve_script(self, account_id: int, name: str) -> None:
        """NotFound; ScriptActive for the active script (RFC 5804 §2.10)."""
        ...

    async def claim_vacation_reply(
        self, account_id: int, sender: str, handle: str, now: float, period: float
    ) -> bool:
        """RFC 5230 §4.2: whether a vacation reply to `sender` for `handle` may go now (none went in
        the last `period` seconds), recording it as sent at `now` when it may, in one transaction (two
        deliveries on two nodes never both reply). Forgets replies older than
        MAX_VACATION_MEMORY_SECONDS in the same transaction."""
        ...

    # -- TLS-RPT (RFC 8460) session counts and daily report claims (surat.delivery.tlsrpt)
    async def add_tls_results(self, counts: Sequence[TlsResultCount]) -> None:
        """Add each count to its key's running total, in one transaction."""
        ...

    async def tls_results(self, day: str) -> list[TlsResultCount]:
        """Every key of `day` with its total."""
        ...

    async def claim_tls_report(self, policy_domain: str, day: str, *, forget_before: str) -> bool:
        """Claim the report of `policy_domain` for `day`: True for the first caller only, on any
        process or node. Forgets the counts and claims of the days before `forget_before` in the same
        transaction."""
        ...

    # -- aliases
    async def add_alias(self, source: str, target: str) -> None: ...
    async def delete_alias(self, source: str, target: str | None = None) -> None: ...
    async def list_aliases(self, domain: str | None = None) -> list[Alias]: ...
    async def alias_targets(self, source: str) -> list[str]:
        """Targets of `source` exactly as stored ("user@domain" or "@domain")."""
        ...

    async def aliases_of(self, target: str) -> list[str]:
        """Sources whose target is `target` (the addresses a user may send as)."""
        ...

    async def lookup_recipient(self, domain: str, candidates: Sequence[str]) -> RecipientLookup:
        """`is_local_domain(domain)`, and `alias_targets` and `get_account` of each of `candidates`
        ("user@domain" or "@domain"), as one read: what RCPT needs for most addresses
        (surat.delivery.local.resolve_recipient). At most MAX_LOOKUP_CANDIDATES candidates."""
        ...

    # -- mailboxes
    async def list_mailboxes(self, account_id: int) -> list[Mailbox]: ...
    async def get_mailbox(self, account_id: int, name: str) -> Mailbox | None: ...
    async def create_mailbox(self, account_id: int, name: str, special_use: str | None = None) -> Mailbox: ...
    async def delete_mailbox(self, account_id: int, name: str) -> None: ...
    async def rename_mailbox(self, account_id: int, old: str, new: str) -> None:
        """Renaming INBOX moves its messages to `new` and leaves INBOX empty (RFC 9051 §6.3.6)."""
        ...

    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None:
        """Subscribing needs an existing mailbox; unsubscribing works for any subscribed name."""
        ...

    async def list_subscriptions(self, account_id: int) -> list[str]:
        """Every subscribed name, including those whose mailbox no longer exists (RFC 9051 §6.3.7)."""
        ...

    async def mailbox_status(self, mailbox_id: int) -> MailboxStatus: ...

    # -- messages
    async def list_messages(self, mailbox_id: int) -> list[MessageSummary]:
        """All messages of a mailbox in UID order (what SELECT and a POP3 login need)."""
        ...

    async def list_message_blobs(self, mailbox_id: int) -> list[MessageBlob]:
        """All messages of a mailbox in UID order with their blob ids (a POP3 login's snapshot);
        cheaper than get_messages, which decodes every MessageInfo."""
        ...

    async def get_messages(self, mailbox_id: int, uids: Sequence[int]) -> list[MessageRecord]: ...
    async def append(
        self,
        account_id: int,
        mailbox_id: int,
        staged: StagedBlob,
        flags: frozenset[str],
        internal_date: datetime,
    ) -> tuple[int, int]:
        """Store a message durably (IMAP APPEND); returns (uidvalidity, uid). Takes `staged` over
        whatever happens (see StagedBlob); its size is the message's size."""
        ...

    async def store_flags(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        mode: FlagMode,
        flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> StoreFlagsResult: ...
    async def expunge(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        *,
        files_in_background: bool = False,
        only_deleted: bool = False,
    ) -> list[int]:
        """Remove messages durably; returns the UIDs actually removed. Their UIDs are remembered.

        With `only_deleted`, only those of `uids` that carry \\Deleted at the moment of the removal go
        (IMAP EXPUNGE and CLOSE: a session's idea of the flags may be older than another session's STORE).

        The message files nothing refers to any more are deleted before this returns, or with
        `files_in_background` right after (the removal is committed either way; a crash before
        the files are gone leaves them to `open()`'s recovery)."""
        ...

    async def copy(self, mailbox_id: int, uids: Sequence[int], dest_mailbox_id: int) -> CopyResult: ...
    async def move(self, mailbox_id: int, uids: Sequence[int], dest_mailbox_id: int) -> CopyResult: ...
    async def changes_since(self, mailbox_id: int, modseq: int) -> MailboxChanges: ...
    async def claim_recent(self, mailbox_id: int, up_to_uid: int, *, peek: bool = False) -> tuple[int, int]:
        """Claim as \\Recent for the calling session every UID from the mailbox's first unclaimed one up
        to ``up_to_uid``, atomically across sessions and processes (RFC 3501 §2.3.2: only one session is
        notified of a message as recent). Returns the claimed range (first, last); empty when last < first.
        With ``peek`` the range is reported and left unclaimed (EXAMINE, RFC 3501 §6.3.2)."""
        ...

    # -- delivery (SMTP): one call per accepted transaction; concurrent calls share one commit
    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        """Store the message and its rows durably (blob and index synced before this returns: the
        250 may follow). Takes `delivery.staged` over whatever happens (see StagedBlob)."""
        ...

    # -- outbound queue
    async def list_queue(self) -> list[QueueEntry]: ...
    async def queue_summary(self) -> QueueSummary:
        """How many entries the queue holds and when the oldest was queued (for /metrics): one
        aggregate query, whatever the queue's size."""
        ...

    async def get_queue_entry(self, queue_id: str) -> QueueEntry | None: ...
    async def due_queue_entries(
        self, now: datetime, limit: int, lease: timedelta | None = None
    ) -> list[QueueEntry]:
        """Up to `limit` entries due at `now`. A store shared by several nodes claims them for this
        node for `lease` (None: the store's default); a single-node store ignores it."""
        ...

    async def reschedule(self, queue_id: str, next_attempt_at: datetime) -> None: ...
    async def drop_queue_entry(self, queue_id: str) -> None: ...
    async def flush_queue(self, now: datetime) -> int:
        """Make every entry due now; returns how many."""
        ...

    async def record_attempt(
        self,
        queue_id: str,
        started_at: datetime,
        host: str | None,
        lease_until: datetime,
        dkim_signature: bytes | None = None,
    ) -> int:
        """Record an attempt before connecting (result None: in flight) and claim the entry by
        moving its next attempt to `lease_until`, so a crashed runner's claim expires by itself.
        `dkim_signature` is kept for the attempts after this one when the entry has none yet.
        Returns the attempt's number (1, 2, ...)."""
        ...

    async def finish_attempt(
        self,
        queue_id: str,
        number: int,
        result: str,
        updates: Sequence[RecipientUpdate],
        next_attempt_at: datetime | None,
        host: str | None = None,
    ) -> None:
        """Record an attempt's result and its recipients' states in one transaction; then either
        schedule the next attempt or, with `next_attempt_at` None, remove the finished entry.
        `host`, when given, replaces the host recorded at the start. A recipient's
        `delay_notified` mark is only ever set by an update, never cleared."""
        ...

    async def renew_leases(self, queue_ids: Sequence[str], now: datetime, lease: timedelta) -> list[str]:
        """The runner's heartbeat: extend this node's claim on the entries it has in flight by `lease`
        from now (their next attempt moves to `now + lease`, as `record_attempt` moved it), so a live
        node keeps them with a short lease. Returns the ids among `queue_ids` that another node holds
        now (it took them over after this node's lease expired); an entry finished or dropped is
        neither renewed nor returned."""
        ...

    async def recover_queue(self, now: datetime) -> int:
        """After a crash: attempts left in flight are marked interrupted and their entries made
        due at `now`; returns how many entries."""
        ...
