"""A conversation's messages as a tree, and the one path through it that the conversation shows.

Every message has a parent (roots: the opening greetings); siblings are alternatives of one
another. The conversation stores the end of the branch it shows (`current_leaf`); the path from
the root to it is what the page shows and what the next reply's prompt holds. Reads here take a
constant number of queries however large the tree: one for the shape (ids and parents only),
one for the messages on the path.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from django.db import connection

from chat.models import Conversation, Message


@dataclass
class Tree:
    """The shape of a conversation's tree: ids and parents, no text."""

    parents: dict[int, int | None]
    children: dict[int | None, list[int]]  # by parent id (None: the roots), oldest first

    def siblings(self, message_id: int) -> list[int]:
        """`message_id` and its alternatives, oldest first."""
        return self.children.get(self.parents[message_id], [])

    def latest_leaf(self, message_id: int) -> int:
        """The end of `message_id`'s newest branch: the newest child, all the way down."""
        while self.children.get(message_id):
            message_id = self.children[message_id][-1]
        return message_id

    def path_to(self, leaf_id: int) -> list[int]:
        """The ids from the root down to `leaf_id`."""
        path = []
        current: int | None = leaf_id
        while current is not None:
            path.append(current)
            current = self.parents[current]
        path.reverse()
        return path

    def subtree(self, message_id: int) -> list[int]:
        """`message_id` and everything below it."""
        found = [message_id]
        for current in found:
            found.extend(self.children.get(current, ()))
        return found

    def shown_leaf(self, current_leaf_id: int | None) -> int | None:
        """The leaf the conversation shows: the stored one, else the newest root's newest
        branch (the stored one is null only for a conversation without messages)."""
        if current_leaf_id in self.parents:
            return current_leaf_id
        roots = self.children.get(None)
        return self.latest_leaf(roots[-1]) if roots else None


def load_tree(conversation_id: int) -> Tree:
    """The shape of a conversation's tree, in one query."""
    parents: dict[int, int | None] = {}
    children: dict[int | None, list[int]] = defaultdict(list)
    rows = Message.objects.filter(conversation_id=conversation_id).order_by("pk")
    for message_id, parent_id in rows.values_list("pk", "parent_id"):
        parents[message_id] = parent_id
        children[parent_id].append(message_id)
    return Tree(parents, dict(children))


def path_messages(tree: Tree, path: list[int]) -> list[Message]:
    """The messages on `path`, in its order, each with `siblings` (its alternatives' ids)."""
    by_id = Message.objects.in_bulk(path)
    messages = []
    for message_id in path:
        message = by_id[message_id]
        message.siblings = tree.siblings(message_id)
        messages.append(message)
    return messages


def visible_path(conversation: Conversation) -> tuple[Tree, list[Message]]:
    """The conversation's tree and the messages it shows, root first (two queries)."""
    tree = load_tree(conversation.pk)
    leaf = tree.shown_leaf(conversation.current_leaf_id)
    return tree, (path_messages(tree, tree.path_to(leaf)) if leaf is not None else [])


# Every reply's prompt reads its branch: one recursive query walking up the parents by primary
# key (both SQLite and PostgreSQL run it), instead of loading the whole tree.
_BRANCH_SQL = (
    'WITH RECURSIVE "branch"("id", "parent_id", "depth") AS ('
    'SELECT "id", "parent_id", 0 FROM "chat_message" WHERE "id" = %s AND "conversation_id" = %s '
    'UNION ALL SELECT "m"."id", "m"."parent_id", "branch"."depth" + 1 FROM "chat_message" "m" '
    'JOIN "branch" ON "m"."id" = "branch"."parent_id") '
    'SELECT "m"."role", "m"."content", "m"."status" FROM "branch" '
    'JOIN "chat_message" "m" ON "m"."id" = "branch"."id" ORDER BY "branch"."depth" DESC'
)


def branch_rows(conversation_id: int, message_id: int) -> list[tuple[str, str, str]]:
    """(role, content, status) of `message_id` and its ancestors, root first, in one query."""
    with connection.cursor() as cursor:
        cursor.execute(_BRANCH_SQL, [message_id, conversation_id])
        return cursor.fetchall()
