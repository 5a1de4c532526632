from pipeline.routing.router import Routed, route_backfill, route_trace

__all__ = ["Routed", "route_backfill", "route_trace"]
