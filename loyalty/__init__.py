"""Use cases that compose the domains: earn for a purchase, redeem, refund, register, bonuses
(the operator's rules, a partner's bonus, referrals) and transfers between members.

One function each, called by the GraphQL resolvers and, later, by imports, the CLI and
webhooks. They run on a `runtime.Runtime` (database, earn batcher, settings, process caches)
and raise domain errors; none of them knows about HTTP or GraphQL.
"""
