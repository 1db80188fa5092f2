"""Who in a flagged window belongs to the excess: a two-class mixture posterior.

A flagged target's window holds ``n`` followers: about ``usual`` of them are its usual traffic
(the target's own rate) and the other ``n - usual`` are the excess (the order, when the test is
right). Each follower is described by two binary traits: *risky* (its account risk is at least
half a strong indicator) and *first seen* (the detectors have no history of it). The usual
followers carry the traits at the target's baseline shares; the excess carries them at the shares
that explain the window's counts, ``(count - usual * baseline share) / excess``. With the prior
odds ``excess / usual``, naive Bayes over the two traits gives P(excess | traits) for each of the
four classes of follower, and a class is a *member class* when that posterior reaches the
threshold: with a large excess even an account with no risk of its own, never seen before, is
most likely part of the order; in a window that is mostly usual traffic only the risky are.

Shares are clipped to ``[0.5/n, 1 - 0.5/n]``: a window of ``n`` followers cannot tell a share
apart from 0 or 1 more finely than that, and the odds must stay finite."""

from __future__ import annotations

__all__ = ["member_class", "member_classes"]


def member_class(risky: bool, first_seen: bool) -> int:
    """The bit of a follower's class in a ``member_classes`` mask."""
    return 1 << (2 * risky + first_seen)


def member_classes(n: float, risky: float, first_seen: float, usual: float, usual_risky_share: float,
                   usual_first_share: float, posterior: float) -> int:
    """The member classes of a window as a bit mask (``member_class`` bits): ``n`` followers of
    which ``risky`` and ``first_seen`` carry each trait, ``usual`` expected from the target's usual
    traffic with those traits at the given shares; ``posterior`` is the threshold (0 < p < 1)."""
    excess = n - usual
    if excess <= 0 or usual <= 0:
        return 0
    eps = 0.5 / n
    p_k = min(max(usual_risky_share, eps), 1.0 - eps)
    p_f = min(max(usual_first_share, eps), 1.0 - eps)
    q_k = min(max((risky - usual * p_k) / excess, eps), 1.0 - eps)
    q_f = min(max((first_seen - usual * p_f) / excess, eps), 1.0 - eps)
    prior = excess / usual
    need = posterior / (1.0 - posterior)
    classes = 0
    for is_risky in (False, True):
        for is_first in (False, True):
            odds = prior * (q_k / p_k if is_risky else (1.0 - q_k) / (1.0 - p_k))
            odds *= q_f / p_f if is_first else (1.0 - q_f) / (1.0 - p_f)
            if odds >= need:
                classes |= member_class(is_risky, is_first)
    return classes
