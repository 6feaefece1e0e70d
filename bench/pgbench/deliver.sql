WITH due AS (
    SELECT id FROM outbox WHERE destination = 'http_request' AND batch_key = 'forward_to_sink' AND status = 'pending'
      AND next_attempt_at <= now() AND (lease_until IS NULL OR lease_until <= now())
    ORDER BY next_attempt_at, id LIMIT 100 FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE outbox o SET lease_until = now() + interval '30 seconds',
        attempts = o.attempts + (CASE WHEN o.lease_until IS NULL THEN 0 ELSE 1 END)
    FROM due WHERE o.id = due.id RETURNING o.id
) SELECT coalesce(array_agg(id), '{}')::text AS ids FROM claimed \gset
UPDATE outbox SET status = 'delivered', delivered_at = now(), lease_until = NULL
  WHERE id = ANY(':ids'::bigint[]) AND status = 'pending';
