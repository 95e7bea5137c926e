"""Every write to subscriptions, a module per sub-domain: `expiry` (and its
digests), `reminders`, `payment_outcomes` (what payments.reconcile asks),
`stripe_sync` (the renewal sync's write-back), `broadcast` (mail to tenants),
`organizations` (billing details)."""
