"""The kopf operator: thin kopf wiring (handlers.py, runner.py) around the pure reconciler (reconcile.py),
the one Kubernetes API client and kubeconfig loader (client.py), pod/Job failure classification
(failures.py), the operator's Prometheus metrics (metrics.py) and the webhook (webhook.py)."""
