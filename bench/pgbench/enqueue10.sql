INSERT INTO outbox (destination, batch_key, idempotency_key, tag, item, created_at, next_attempt_at)
  SELECT destination, batch_key, gen_random_uuid()::text, tag, item, now(), now() FROM template, generate_series(1, 10);
