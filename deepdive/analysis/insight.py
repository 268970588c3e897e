"""Training insight: when did validation accuracy stop improving, and what would stopping there have saved?"""
import math

DEFAULT_TOLERANCE_PP = 0.1  # percentage points of validation accuracy


def early_stop(epochs: list[dict], tolerance_pp: float = DEFAULT_TOLERANCE_PP) -> dict | None:
    """The earliest epoch from which val accuracy stayed within `tolerance_pp` percentage points of the best one,
    through the best epoch. "Stayed": one lucky early epoch does not count; on a 5,000-image validation split 0.1 pp
    is 5 images, about what val accuracy moves from one epoch to the next late in training.

    `epochs` are store.epochs rows (epoch, val_acc, seconds, member, ...). val_acc is a fraction in [0, 1] as the
    trainer stores it; a history whose values exceed 1 is read as percentages. Time saved = the seconds of all
    epochs after the earliest one, absolute and as a fraction of the total. Returns None when no epoch has a
    val accuracy (nothing to judge).

    An ensemble's rows carry their member's index, and its members train one after another from scratch, so each
    member is judged on its own curve: the result then has "members" (one single-model result each, plus
    "member", "first_epoch" and member-local "earliest_member_epoch" / "best_member_epoch" / "member_epochs")
    and the totals over all members (stopping each member at its own earliest epoch).
    """
    member_ids = sorted({int(e["member"]) for e in epochs if e.get("member") is not None})
    if len(member_ids) < 2:
        return _one_curve(epochs, tolerance_pp)
    members = []
    for m in member_ids:
        rows = [e for e in epochs if e.get("member") is not None and int(e["member"]) == m]
        hint = _one_curve(rows, tolerance_pp)
        if hint is None:
            return None
        first = min(int(e["epoch"]) for e in rows)
        members.append({"member": m, "first_epoch": first, "member_epochs": len(rows),
                        "earliest_member_epoch": hint["earliest_epoch"] - first + 1,
                        "best_member_epoch": hint["best_epoch"] - first + 1, **hint})
    total = sum(h["seconds_total"] for h in members)
    saved = sum(h["seconds_saved"] for h in members)
    return {
        "tolerance_pp": tolerance_pp,
        "members": members,
        "epochs_total": sum(h["epochs_total"] for h in members),
        "epochs_saved": sum(h["epochs_saved"] for h in members),
        "seconds_total": total,
        "seconds_saved": saved,
        "fraction_saved": saved / total if total > 0 else 0.0,
        "seconds_missing": any(h["seconds_missing"] for h in members),
    }


def _one_curve(epochs, tolerance_pp):
    rows = sorted((e for e in epochs if _number(e.get("val_acc")) is not None), key=lambda e: e["epoch"])
    if not rows:
        return None
    accs = [float(e["val_acc"]) for e in rows]
    scale = 100.0 if max(accs) <= 1.0 else 1.0  # to percentage points
    best = max(accs)
    tolerance = tolerance_pp / scale
    best_at = accs.index(best)
    start = best_at
    # Walk back from the best epoch while within; a tiny epsilon so that "exactly 0.1 pp below" counts as within.
    while start > 0 and accs[start - 1] >= best - tolerance - 1e-12:
        start -= 1
    earliest, best_row = rows[start], rows[best_at]
    all_rows = sorted(epochs, key=lambda e: e["epoch"])
    seconds = [_number(e.get("seconds")) or 0.0 for e in all_rows]
    total = sum(seconds)
    saved = sum(s for e, s in zip(all_rows, seconds) if e["epoch"] > earliest["epoch"])
    return {
        "tolerance_pp": tolerance_pp,
        "best_epoch": int(best_row["epoch"]),
        "best_val_acc": best,
        "earliest_epoch": int(earliest["epoch"]),
        "earliest_val_acc": float(earliest["val_acc"]),
        "epochs_total": len(all_rows),
        "epochs_saved": sum(1 for e in all_rows if e["epoch"] > earliest["epoch"]),
        "seconds_total": total,
        "seconds_saved": saved,
        "fraction_saved": saved / total if total > 0 else 0.0,
        "seconds_missing": any(_number(e.get("seconds")) is None for e in all_rows),
    }


def _number(value):
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value
