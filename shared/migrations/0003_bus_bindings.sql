-- The topic bindings each handler made on the broker, so that a start can remove those its
-- subscription no longer declares (RabbitMQ cannot list bindings to an AMQP client).
CREATE TABLE bus_bindings (
    handler      text NOT NULL,  -- <service>.<handler>
    exchange     text NOT NULL,  -- boreas.events or boreas.internal
    destination  text NOT NULL,  -- the handler's queue, or its router exchange
    kind         text NOT NULL CHECK (kind IN ('queue', 'exchange')),
    routing_key  text NOT NULL,
    PRIMARY KEY (handler, exchange, destination, kind, routing_key)
);
