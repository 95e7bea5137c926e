"""Stripe webhooks, one module per step: `views` and `urls` receive and verify
(`POST /webhooks/stripe/<tenant key>`), `models` stores each event once
(StripeWebhookEvent), `processing` applies each once and in Stripe's order
through the services that own the rows, `jobs` is payments.process_stripe_webhooks,
`admin` lists the events, `openapi` adds the path to the contract."""
