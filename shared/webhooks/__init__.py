"""Webhooks as the Standard Webhooks spec has them: signing, topic patterns and target checks.

The gateway registers webhooks and the notifier delivers to them; both use these pure pieces.
"""
