"""The GraphQL API (contract section 10): ``schema`` (types and resolvers over the domain
services), ``feed`` (subscriptions over ``StreamSource``), ``errors`` (extensions.code),
``view`` (HTTP and graphql-transport-ws on strawberry's aiohttp view)."""

from sse_jobs.web.graphql.view import add_routes

__all__ = ["add_routes"]
