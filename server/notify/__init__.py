"""Notifications: bilingual messages to contacts over e-mail, webhooks and WeCom/DingTalk group robots."""
