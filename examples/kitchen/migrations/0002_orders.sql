-- Orders reference menu items.
CREATE TABLE orders (
    id         bigserial PRIMARY KEY,
    item_id    integer NOT NULL REFERENCES menu_items (id),
    quantity   integer NOT NULL CHECK (quantity BETWEEN 1 AND 50),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX orders_item_id_idx ON orders (item_id);
