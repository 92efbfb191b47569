-- The table of schemas/examples/etl.yaml (README, "Kafka to PostgreSQL") and of docker-compose.yml.
-- sluice fills event_key with a UUID of the event's source + id; the primary key on
-- it is what makes a redelivered event a no-op instead of a duplicate row.
CREATE TABLE IF NOT EXISTS orders (
    event_key  uuid PRIMARY KEY,
    order_id   text NOT NULL,
    customer   text,
    amount     numeric,
    big        boolean,
    ordered_at timestamptz,
    raw        jsonb
);
