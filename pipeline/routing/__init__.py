from pipeline.routing.router import Routed, route_trace

__all__ = ["Routed", "route_trace"]
