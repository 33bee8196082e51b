"""IMAP THREAD (RFC 5256 §3): ORDEREDSUBJECT and REFERENCES, and the THREAD response format (§4).

Threads are built from the matching messages only (references to other messages become dummies), and
every walk over a tree is iterative: a crafted mailbox with a reply chain thousands deep must not hit
Python's recursion limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from surat.imapd.search import (
    MessageSource,
    SearchView,
    check_charset,
    iter_records,
    matching_indexes,
)
from surat.imapd.sorting import ascii_casemap, base_subject, sent_timestamp
from surat.proto.imap.commands import SearchKey

__all__ = ["MAX_REFERENCES", "THREAD_ALGORITHMS", "ThreadNode", "format_threads", "thread"]

THREAD_ALGORITHMS: Final = ("ORDEREDSUBJECT", "REFERENCES")
MAX_REFERENCES: Final = 100  # References ids of one message used for threading (the last ones)
# Above this many messages the threads are built in a worker thread: building is linear in the
# messages and their references but takes ~10 ms per 1000 messages, too long to hold the event loop.
_INLINE_THREADING: Final = 1000


@dataclass(frozen=True, slots=True)
class ThreadNode:
    """One message of a thread (``uid``) and its replies. ``uid`` None is a dummy: a missing parent
    that groups top-level threads (RFC 5256 §3 REFERENCES leaves dummies only at the top)."""

    uid: int | None
    children: tuple[ThreadNode, ...] = ()


@dataclass(frozen=True, slots=True)
class _Message:
    uid: int
    seq: int
    date: float  # RFC 5256 §2.2 sent date
    subject: str  # base subject, i;ascii-casemap
    reply: bool  # the subject marks a reply or forward
    message_id: str | None
    references: tuple[str, ...]


async def _messages(
    store: MessageSource, mailbox_id: int, view: SearchView, key: SearchKey
) -> list[_Message]:
    indexes = await matching_indexes(store, mailbox_id, view, key)
    uids = [view.uids[i] for i in indexes]
    seq = {view.uids[i]: i + 1 for i in indexes}
    state = view.state
    out: list[_Message] = []
    async for records in iter_records(store, mailbox_id, uids):
        for record in records:
            info = record.info
            subject, reply = base_subject(info.subject)
            # RFC 5256 §3 REFERENCES step 1: without usable References, the first In-Reply-To id.
            refs = info.references or ((info.in_reply_to,) if info.in_reply_to else ())
            # Only the last MAX_REFERENCES: they name the nearest ancestors, which are what places this
            # message; earlier ones only link ancestors to each other, as those messages' own References
            # do. Bounds step 1's work per message whatever a sender puts in the header.
            refs = refs[-MAX_REFERENCES:]
            out.append(
                _Message(
                    uid=record.uid,
                    seq=seq[record.uid],
                    date=sent_timestamp(info, state[record.uid]),
                    subject=ascii_casemap(subject),
                    reply=reply,
                    message_id=info.message_id,
                    references=refs,
                )
            )
    out.sort(key=lambda m: m.seq)
    return out


# ------------------------------------------------------------------------------------ ORDEREDSUBJECT


def _ordered_subject(messages: Sequence[_Message]) -> list[ThreadNode]:
    """RFC 5256 §3 ORDEREDSUBJECT: group by base subject, each group by sent date; the first message
    is the parent of all the others (no grandchildren); threads ordered by their first message."""
    groups: dict[str, list[_Message]] = {}
    for message in sorted(messages, key=lambda m: (m.subject, m.date, m.seq)):
        groups.setdefault(message.subject, []).append(message)
    threads = sorted(groups.values(), key=lambda g: (g[0].date, g[0].seq))
    return [ThreadNode(g[0].uid, tuple(ThreadNode(m.uid) for m in g[1:])) for g in threads]


# ------------------------------------------------------------------------------------ REFERENCES


@dataclass(eq=False, slots=True)
class _Container:
    message: _Message | None = None  # None: a dummy
    parent: _Container | None = None
    children: list[_Container] = field(default_factory=list)

    def is_ancestor_of(self, other: _Container) -> bool:
        node: _Container | None = other
        while node is not None:
            if node is self:
                return True
            node = node.parent
        return False

    def unlink(self) -> None:
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None

    def adopt(self, child: _Container) -> None:
        child.unlink()
        child.parent = self
        self.children.append(child)


def _link(parent: _Container, child: _Container) -> bool:
    """Make ``child`` a child of ``parent`` unless that would create a loop."""
    # A container without children is nobody's ancestor: no walk up from ``parent`` (which would make a
    # reply chain thousands deep quadratic).
    if child is parent or (child.children and child.is_ancestor_of(parent)):
        return False
    parent.adopt(child)
    return True


def _sort_key(node: _Container) -> tuple[float, int]:
    # RFC 5256 §3 steps 4 and 6: a dummy sorts as its first child (children already sorted).
    while node.message is None and node.children:
        node = node.children[0]
    return (node.message.date, node.message.seq) if node.message is not None else (0.0, 0)


def _postorder(roots: Sequence[_Container]) -> list[_Container]:
    order: list[_Container] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    order.reverse()  # every node after all of its descendants
    return order


def _references(messages: Sequence[_Message]) -> list[ThreadNode]:
    ids: dict[str, _Container] = {}
    containers: list[_Container] = []

    def by_id(message_id: str) -> _Container:
        found = ids.get(message_id)
        if found is None:
            found = ids[message_id] = _Container()
            containers.append(found)
        return found

    # Step 1: link messages by their references (message-id comparison is case-sensitive).
    for message in messages:
        existing = ids.get(message.message_id) if message.message_id else None
        if existing is not None and existing.message is None:
            current = existing  # a dummy made by an earlier reference: it is this message
            current.message = message
        else:
            # No Message-ID, or a duplicate: the message gets a unique id of its own.
            current = _Container(message)
            containers.append(current)
            if message.message_id and existing is None:
                ids[message.message_id] = current
        previous: _Container | None = None
        for ref in message.references:
            ref_container = by_id(ref)
            # 1.A: each reference is the parent of the next, unless it already has a parent.
            if previous is not None and ref_container.parent is None:
                _link(previous, ref_container)
            previous = ref_container
        # 1.B: the last reference is the parent of this message, replacing an existing parent
        # (probably from a truncated References); no references means no parent.
        if previous is None:
            current.unlink()
        elif previous is not current and not (current.children and current.is_ancestor_of(previous)):
            previous.adopt(current)

    # Step 2: the parentless containers are the root's children.
    roots = [c for c in containers if c.parent is None]

    # Step 3: prune dummies, bottom-up so promoted children are already pruned.
    for node in _postorder(roots):
        kept: list[_Container] = []
        for child in node.children:
            if child.message is None:
                for grandchild in child.children:  # B: splice its children in (A: none means gone)
                    grandchild.parent = node
                    kept.append(grandchild)
            else:
                kept.append(child)
        node.children = kept
    top: list[_Container] = []
    for node in roots:
        if node.message is None and len(node.children) <= 1:
            # At the top, a dummy goes only if it has at most one child (RFC 5256 §3 step 3.B).
            for child in node.children:
                child.parent = None
                top.append(child)
        else:
            top.append(node)

    # Step 4: sort the top level by sent date (a dummy's children first, then by its first child).
    for node in top:
        if node.message is None:
            node.children.sort(key=_sort_key)
    top.sort(key=_sort_key)

    # Step 5: merge threads whose subjects match.
    def thread_subject(node: _Container) -> str:
        first: _Message | None = node.message if node.message is not None else node.children[0].message
        return first.subject if first is not None else ""

    table: dict[str, _Container] = {}
    for node in top:  # B: one thread per subject, preferring a dummy, then a message that is no reply
        subject = thread_subject(node)
        if not subject:
            continue
        held = table.get(subject)
        if held is None or (
            held.message is not None
            and (node.message is None or (held.message.reply and not node.message.reply))
        ):
            table[subject] = node
    slots: list[_Container | None] = list(top)
    position = {id(node): k for k, node in enumerate(top)}
    for k in range(len(slots)):  # C: merge the others into it
        merging = slots[k]
        if merging is None or merging.parent is not None:
            continue
        subject = thread_subject(merging)
        held = table.get(subject) if subject else None
        if held is None or held is merging:
            continue
        merging_message = merging.message
        if (
            held.message is None and merging_message is None
        ):  # a: both dummies, their children become siblings
            for child in list(merging.children):
                held.adopt(child)
        elif held.message is None or (
            merging_message is not None and merging_message.reply and not held.message.reply
        ):
            held.adopt(merging)  # b and c: a child of the one in the table
        else:  # d: both under a new dummy, which takes the table's place (at the top and in the table)
            dummy = _Container()
            slot = position[id(held)]
            dummy.adopt(held)
            dummy.adopt(merging)
            slots[slot] = dummy
            position[id(dummy)] = slot
            table[subject] = dummy
        slots[k] = None
    top = [node for node in slots if node is not None]

    # Step 6: sort every set of siblings by sent date, the deepest first.
    for node in _postorder(top):
        node.children.sort(key=_sort_key)
    top.sort(key=_sort_key)
    return _freeze(top)


def _freeze(roots: Sequence[_Container]) -> list[ThreadNode]:
    frozen: dict[int, ThreadNode] = {}
    for node in _postorder(roots):
        frozen[id(node)] = ThreadNode(
            node.message.uid if node.message is not None else None,
            tuple(frozen.pop(id(c)) for c in node.children),
        )
    return [frozen[id(r)] for r in roots]


# ------------------------------------------------------------------------------------ entry points


async def thread(
    store: MessageSource,
    mailbox_id: int,
    view: SearchView,
    algorithm: str,
    key: SearchKey,
    charset: str | None,
) -> list[ThreadNode]:
    """The threads of the messages matching ``key`` (UIDs), in RFC 5256 order. Raises ``BadCharset``
    like ``search`` and ``ValueError`` for an unknown algorithm (the parser already rejects those)."""
    check_charset(charset)
    name = algorithm.upper()
    if name not in THREAD_ALGORITHMS:
        raise ValueError(f"unknown thread algorithm {algorithm}")
    messages = await _messages(store, mailbox_id, view, key)
    build = _ordered_subject if name == "ORDEREDSUBJECT" else _references
    if len(messages) <= _INLINE_THREADING:
        return build(messages)
    return await asyncio.to_thread(build, messages)


def _tokens(roots: Sequence[ThreadNode], number: Callable[[int], int]) -> Iterator[str]:
    # RFC 5256 §4: thread-list = "(" (thread-members / thread-nested) ")";
    # thread-members = nz-number *(SP nz-number) [SP thread-nested]; thread-nested = 2*thread-list.
    stack: list[ThreadNode | str] = list(reversed(roots))
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
            continue
        members: list[str] = []
        node = item
        while len(node.children) == 1:  # a chain of single replies is written flat
            if node.uid is not None:
                members.append(str(number(node.uid)))
            node = node.children[0]
        if node.uid is not None:
            members.append(str(number(node.uid)))
        yield "(" + " ".join(members)
        if node.children and members:
            yield " "
        stack.append(")")
        stack.extend(reversed(node.children))


def format_threads(roots: Sequence[ThreadNode], number: Callable[[int], int] | None = None) -> str:
    """The data of a `* THREAD` response, e.g. ``(2)(3 6 (4 23)(44 7 96))``; ``number`` maps a UID to
    what the client asked for (the sequence number for THREAD, identity for UID THREAD)."""
    return "".join(_tokens(roots, number or (lambda uid: uid)))
