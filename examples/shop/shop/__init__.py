"""The shop: Flotilla's reference system (users, catalog, inventory, orders, payments,
notifications), one module per service, the events they exchange in :mod:`shop.events`."""
