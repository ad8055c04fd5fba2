"""The ledger: every movement of the coalition currency goes through these functions.

Rules (DOMAIN.md "Ledger"):
- Double entry. A transaction's entries are written by ONE statement and the database refuses
  any statement whose entries do not sum to zero per transaction (trigger in migration 0001).
  Entries are insert-only. Member wallet/debt rows keep a stored balance (the trigger adds the
  entries to it); partner and operator accounts have none, so no partner row is ever locked.
- Lots: an earn or a bonus creates a lot (its issuer: the partner, or NULL for the operator,
  whose `promotions` account funds it); spending (a capture, a reward) consumes lots
  earliest-expiry first, ties by creation order; a transfer moves points into new lots of the
  receiver carrying the issuer, earn and dates of the lots given (`ledger.models.Lot`); every
  consumption, return or transfer of a lot's points is a `lot_postings` row.
- Holds: authorize reserves points from lots (lots.remaining drops, wallet balance does not);
  capture posts up to the hold and releases the rest; void/expiry releases everything.
  So: wallet balance = sum(lots.remaining) + points reserved by active holds.
- Idempotency: (key space, operation, key) is unique in the database. A key space is whose keys
  they are: a partner's (all of its OAuth clients share it), a member's, the operator's
  (`partner_key_space` etc.); it defaults to the actor. The actor (the client) is recorded
  beside the key. The key is claimed first in the transaction; a concurrent request with the same key waits on the unique index until the
  first one commits (then replays its stored result) or rolls back (then runs itself).
  Failures store nothing: the key stays free and a retry runs again.

Lock order, everywhere, so that two transactions can never deadlock: the idempotency key, then
the member's wallet and debt rows (by account id), then the hold, then the member's lots. The
expiry job locks many wallets, a transfer both members' wallet and debt rows, always in
ascending id order.

Every function takes the caller's connection and never commits: the caller's unit of work does.

The ledger's functions, one module per concern, all importable from here: `ledger.results`
(what operations return), `ledger.claims` (checks, digests, idempotency claims),
`ledger.accounts`, `ledger.earn`, `ledger.bonuses` (points for a non-purchase event, issued by
a partner or the operator), `ledger.holds` (authorize, capture, void), `ledger.rewards` (a
reward's points taken at once), `ledger.transfers` (points given by a member to another),
`ledger.reversals` (reversal, return), `ledger.jobs` (expiry), `ledger.reads` (what other
packages may read).
"""

from __future__ import annotations

from ledger.accounts import open_member_accounts, open_partner_accounts
from ledger.bonuses import BonusRequest, award_bonus
from ledger.claims import (
    _CLAIM_AND_LOCK,  # read by bench/earn.py
    MAX_KEY_LENGTH,
    MAX_POINTS,
    OPERATOR_KEY_SPACE,
    claim_key,
    client_digest,
    earn_request_digest,
    member_key_space,
    partner_key_space,
    request_hash,
    store_key_result,
    stored_result,
)
from ledger.earn import (
    DEFAULT_VALIDITY_MONTHS,
    EarnRequest,
    FollowUp,
    _earn_statement,  # read by bench/earn_pgbench.py
    add_months,
    check_earn,
    earn,
    earn_digest,
    lines_json,
    operator_points,
)
from ledger.holds import DEFAULT_HOLD_TTL, authorize, capture, capture_digest, void
from ledger.jobs import expire_points, release_expired_holds
from ledger.reads import (
    CapturedHold,
    ExpiryRun,
    HistoryItem,
    HoldRecord,
    OrderEarn,
    PendingPart,
    account_balance,
    balance,
    captured_holds,
    earn_lines,
    get_hold,
    history,
    last_expiry,
    order_earn,
    pending_parts,
)
from ledger.results import (
    Balance,
    BonusResult,
    BreakdownLine,
    CaptureResult,
    EarnResult,
    ExpiryReport,
    HoldResult,
    ReturnResult,
    ReversalResult,
    RewardSpendResult,
    TransferResult,
    VoidResult,
)
from ledger.reversals import return_points, reverse_earn
from ledger.rewards import RewardSpendRequest, redeem_reward_points
from ledger.transfers import TRANSFER_WINDOW, TransferRequest, transfer_points

__all__ = [
    "DEFAULT_HOLD_TTL",
    "DEFAULT_VALIDITY_MONTHS",
    "MAX_KEY_LENGTH",
    "MAX_POINTS",
    "OPERATOR_KEY_SPACE",
    "TRANSFER_WINDOW",
    "_CLAIM_AND_LOCK",
    "Balance",
    "BonusRequest",
    "BonusResult",
    "BreakdownLine",
    "CaptureResult",
    "CapturedHold",
    "EarnRequest",
    "EarnResult",
    "ExpiryReport",
    "ExpiryRun",
    "FollowUp",
    "HistoryItem",
    "HoldRecord",
    "HoldResult",
    "OrderEarn",
    "PendingPart",
    "ReturnResult",
    "ReversalResult",
    "RewardSpendRequest",
    "RewardSpendResult",
    "TransferRequest",
    "TransferResult",
    "VoidResult",
    "_earn_statement",
    "account_balance",
    "add_months",
    "authorize",
    "award_bonus",
    "balance",
    "capture",
    "capture_digest",
    "captured_holds",
    "check_earn",
    "claim_key",
    "client_digest",
    "earn",
    "earn_digest",
    "earn_lines",
    "earn_request_digest",
    "expire_points",
    "get_hold",
    "history",
    "last_expiry",
    "lines_json",
    "member_key_space",
    "open_member_accounts",
    "open_partner_accounts",
    "operator_points",
    "order_earn",
    "partner_key_space",
    "pending_parts",
    "redeem_reward_points",
    "release_expired_holds",
    "request_hash",
    "return_points",
    "reverse_earn",
    "store_key_result",
    "stored_result",
    "transfer_points",
    "void",
]
