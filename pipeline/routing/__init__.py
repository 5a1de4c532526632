from pipeline.routing.router import Routed, route_backfill, route_trace
from pipeline.routing.sessions import RoutedSession, route_session

__all__ = ["Routed", "RoutedSession", "route_backfill", "route_session", "route_trace"]
