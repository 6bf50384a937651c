-- Customers: personal data (emails, names, phone numbers). In a real project these rows come
-- from production; here the parent database gets a few made-up ones, so that an `anonymized`
-- preview has something to mask ([[database.masking]] in atlas.toml).
CREATE TABLE users (
    id         serial PRIMARY KEY,
    email      text NOT NULL UNIQUE,
    name       text NOT NULL,
    phone      text,
    created_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO users (email, name, phone) VALUES
    ('ada.lovelace@kitchen-customers.test', 'Ada Lovelace', '+44 20 7946 0018'),
    ('grace.hopper@kitchen-customers.test', 'Grace Hopper', '+1 202 555 0143'),
    ('alan.turing@kitchen-customers.test', 'Alan Turing', NULL),
    ('katherine.johnson@kitchen-customers.test', 'Katherine Johnson', '+1 757 555 0199');
