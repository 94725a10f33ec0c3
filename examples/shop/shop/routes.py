"""The shop's HTTP API (examples/shop/README.md): each route of the contract onto an RPC method.

The services check who may do what from ``ctx.principal`` (the verified
token's subject and roles); ``auth`` here refuses early what no service would
accept (401 without a valid token, 403 without the admin role), so an
anonymous or non-admin request never reaches them.  Ownership stays in the
services: another user's order answers 404 there, as if it did not exist.
"""

from __future__ import annotations

from flotilla.gateway import Route, TokenRoute

from .auth import ADMIN

__all__ = ["ROUTES"]

ROUTES: list[Route] = [
    # -- accounts ---------------------------------------------------------------------------
    Route("POST", "/api/users", "users.create", status=201, summary="Create an account"),
    TokenRoute("POST", "/api/auth/token", "users.authenticate"),
    # -- catalog and stock ------------------------------------------------------------------
    Route(
        "POST",
        "/api/products",
        "catalog.create",
        status=201,
        auth=ADMIN,
        summary="Create a product with its initial stock (admin)",
    ),
    Route(
        "GET",
        "/api/products",
        "catalog.list",
        query=["category", "limit", "cursor"],
        body=False,
        summary="List products, a page at a time",
    ),
    Route("GET", "/api/products/{id}", "catalog.get", body=False, summary="One product"),
    Route(
        "GET",
        "/api/products/{id}/stock",
        "inventory.stock",
        path={"id": "product_id"},
        body=False,
        summary="A product's stock: available, reserved, sold",
    ),
    Route(
        "POST",
        "/api/products/{id}/stock",
        "inventory.add_stock",
        path={"id": "product_id"},
        auth=ADMIN,
        summary="Add stock to a product (admin)",
    ),
    # -- orders -----------------------------------------------------------------------------
    Route(
        "POST",
        "/api/orders",
        "orders.create",
        status=202,
        auth="user",
        headers={"Idempotency-Key": "idempotency_key"},
        summary="Place an order",
    ),
    Route(
        "GET",
        "/api/orders",
        "orders.list",
        auth="user",
        query=["limit"],
        body=False,
        summary="The caller's orders, newest first",
    ),
    Route(
        "GET",
        "/api/orders/{id}",
        "orders.get",
        auth="user",
        body=False,
        summary="One order (the caller's own; an admin: any)",
    ),
    Route(
        "POST",
        "/api/orders/{id}/cancel",
        "orders.cancel",
        auth="user",
        body=False,
        summary="Cancel an order (refunded when paid)",
    ),
    Route(
        "POST",
        "/api/orders/{id}/ship",
        "orders.ship",
        auth=ADMIN,
        body=False,
        summary="Mark a confirmed order shipped (admin)",
    ),
    Route(
        "POST",
        "/api/orders/{id}/deliver",
        "orders.deliver",
        auth=ADMIN,
        body=False,
        summary="Mark a shipped order delivered (admin)",
    ),
    Route(
        "GET",
        "/api/orders/{id}/payment",
        "payments.get",
        path={"id": "order_id"},
        auth="user",
        body=False,
        summary="An order's payment",
    ),
    # -- notifications ----------------------------------------------------------------------
    Route(
        "GET",
        "/api/notifications",
        "notifications.list",
        auth="user",
        query=["limit"],
        body=False,
        summary="What the caller was told about their orders",
    ),
]
