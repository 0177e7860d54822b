"""Running routers on traffic: the routing policy and strong-call budget, the controller
(OpenAI-compatible clients), the routing server (handlers, error table, upstream relay with its one
fallback rule, Prometheus metrics), and batch scoring of prompt logs (local or Ray).
"""
