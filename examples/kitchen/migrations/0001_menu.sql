-- The menu: what the kitchen can cook.
CREATE TABLE menu_items (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    price_cents integer NOT NULL CHECK (price_cents > 0)
);

INSERT INTO menu_items (name, price_cents) VALUES
    ('margherita', 900),
    ('marinara', 750),
    ('quattro formaggi', 1150),
    ('tiramisu', 550);
