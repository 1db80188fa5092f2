"""In-memory social model for the demo backend (users, posts, comments, follows).

Every public method takes the store's lock, so concurrent requests always see a
consistent state. Methods return immutable records or plain-dict snapshots, never
live mutable objects.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MODERATOR_ROLES = frozenset({"moderator", "admin"})


class ProblemError(Exception):
    """An error that maps to an RFC 9457 problem response with the given status."""

    def __init__(self, status: int, detail: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra or {}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Post:
    id: int
    author: str
    body: str
    created_at: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "author": self.author, "body": self.body, "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class Comment:
    id: int
    post_id: int
    author: str
    body: str
    created_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "post_id": self.post_id,
            "author": self.author,
            "body": self.body,
            "created_at": self.created_at,
        }


@dataclass(slots=True)
class _Profile:
    username: str
    display_name: str
    created_at: str
    followers: set[str] = field(default_factory=set)
    following: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None

    def to_json(self) -> dict[str, Any]:
        return {"items": self.items, "next_cursor": self.next_cursor}


def _int_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit() or len(cursor) > 18:
        raise ProblemError(400, "cursor is not valid")
    return int(cursor)


def _descending(ids: list[int], before: int | None) -> Iterator[int]:
    end = len(ids) if before is None else bisect_left(ids, before)
    return (ids[i] for i in range(end - 1, -1, -1))


class Store:
    """Thread-safe in-memory store; one per app instance."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._profiles: dict[str, _Profile] = {}
        self._posts: dict[int, Post] = {}
        self._posts_by_author: dict[str, list[int]] = {}
        self._comments: dict[int, Comment] = {}
        self._comments_by_post: dict[int, list[int]] = {}

    # -- users -------------------------------------------------------------
    def ensure_user(self, username: str, display_name: str | None = None) -> bool:
        """Create the profile if missing (True if created); update display_name if given."""
        with self._lock:
            profile = self._profiles.get(username)
            if profile is None:
                self._profiles[username] = _Profile(username, display_name or username, _now())
                self._posts_by_author[username] = []
                return True
            if display_name is not None:
                profile.display_name = display_name
            return False

    def profile(self, username: str) -> dict[str, Any]:
        with self._lock:
            p = self._get_profile(username)
            return {
                "username": p.username,
                "display_name": p.display_name,
                "created_at": p.created_at,
                "followers_count": len(p.followers),
                "following_count": len(p.following),
                "post_count": len(self._posts_by_author[username]),
            }

    def _get_profile(self, username: str) -> _Profile:
        profile = self._profiles.get(username)
        if profile is None:
            raise ProblemError(404, f"user {username!r} does not exist")
        return profile

    # -- follows -----------------------------------------------------------
    def set_follow(self, follower: str, target: str, following: bool) -> None:
        with self._lock:
            if follower == target:
                raise ProblemError(400, "you cannot follow yourself")
            tgt = self._get_profile(target)
            src = self._get_profile(follower)
            if following:
                src.following.add(target)
                tgt.followers.add(follower)
            else:
                src.following.discard(target)
                tgt.followers.discard(follower)

    def follow_list(self, username: str, which: str, limit: int, cursor: str | None) -> Page:
        """Followers or following of username, ordered by username; cursor = last username seen."""
        with self._lock:
            profile = self._get_profile(username)
            names = sorted(profile.followers if which == "followers" else profile.following)
            start = 0 if cursor is None else bisect_right(names, cursor)
            chunk = names[start : start + limit]
            items = [{"username": n, "display_name": self._profiles[n].display_name} for n in chunk]
            more = start + limit < len(names)
            return Page(items, chunk[-1] if more and chunk else None)

    # -- posts -------------------------------------------------------------
    def create_post(self, author: str, body: str) -> Post:
        with self._lock:
            self._get_profile(author)
            post = Post(next(self._ids), author, body, _now())
            self._posts[post.id] = post
            self._posts_by_author[author].append(post.id)
            self._comments_by_post[post.id] = []
            return post

    def get_post(self, post_id: int) -> Post:
        with self._lock:
            return self._get_post(post_id)

    def _get_post(self, post_id: int) -> Post:
        post = self._posts.get(post_id)
        if post is None:
            raise ProblemError(404, f"post {post_id} does not exist")
        return post

    def delete_post(self, post_id: int, actor: str, roles: frozenset[str]) -> None:
        with self._lock:
            post = self._get_post(post_id)
            if post.author != actor and not roles & MODERATOR_ROLES:
                raise ProblemError(403, "only the author or a moderator may delete this post")
            del self._posts[post_id]
            self._posts_by_author[post.author].remove(post_id)
            for comment_id in self._comments_by_post.pop(post_id, []):
                self._comments.pop(comment_id, None)

    def user_posts(self, username: str, limit: int, cursor: str | None) -> Page:
        """Posts by username, newest first; cursor = id of the last post seen."""
        with self._lock:
            self._get_profile(username)
            ids = _descending(self._posts_by_author[username], _int_cursor(cursor))
            return self._post_page(ids, limit)

    def feed(self, username: str, limit: int, cursor: str | None) -> Page:
        """Posts by everyone username follows, newest first; cursor = id of the last post seen."""
        with self._lock:
            before = _int_cursor(cursor)
            profile = self._get_profile(username)
            streams = [_descending(self._posts_by_author[a], before) for a in profile.following]
            return self._post_page(heapq.merge(*streams, reverse=True), limit)

    def _post_page(self, ids: Iterator[int], limit: int) -> Page:
        chunk = list(itertools.islice(ids, limit + 1))
        items = [self._posts[i].to_json() for i in chunk[:limit]]
        return Page(items, str(chunk[limit - 1]) if len(chunk) > limit else None)

    # -- comments ----------------------------------------------------------
    def create_comment(self, post_id: int, author: str, body: str) -> Comment:
        with self._lock:
            self._get_post(post_id)
            self._get_profile(author)
            comment = Comment(next(self._ids), post_id, author, body, _now())
            self._comments[comment.id] = comment
            self._comments_by_post[post_id].append(comment.id)
            return comment

    def comments(self, post_id: int, limit: int, cursor: str | None) -> Page:
        """Comments on a post, oldest first; cursor = id of the last comment seen."""
        with self._lock:
            self._get_post(post_id)
            after = _int_cursor(cursor)
            ids = self._comments_by_post[post_id]
            start = 0 if after is None else bisect_right(ids, after)
            chunk = ids[start : start + limit]
            items = [self._comments[i].to_json() for i in chunk]
            more = start + limit < len(ids)
            return Page(items, str(chunk[-1]) if more and chunk else None)

    def delete_comment(self, comment_id: int, actor: str, roles: frozenset[str]) -> None:
        with self._lock:
            comment = self._comments.get(comment_id)
            if comment is None:
                raise ProblemError(404, f"comment {comment_id} does not exist")
            if comment.author != actor and not roles & MODERATOR_ROLES:
                raise ProblemError(403, "only the author or a moderator may delete this comment")
            del self._comments[comment_id]
            self._comments_by_post[comment.post_id].remove(comment_id)
