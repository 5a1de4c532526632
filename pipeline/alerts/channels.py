"""The configured alert channels, from settings: Slack (bot token + channel, or incoming webhook), a webhook,
a Python hook; every one of them gets every alert (`FanOutChannel`), and with none the console does."""

from __future__ import annotations

from pipeline.alerts.channel import Channel, ConsoleChannel, FanOutChannel
from pipeline.alerts.slack import SlackBotChannel, SlackWebhookChannel
from pipeline.alerts.webhook import HookChannel, WebhookChannel, load_hook
from pipeline.settings import Settings

__all__ = ["Channel", "channel_from_settings"]


def channel_from_settings(settings: Settings) -> Channel:
    channels: list[Channel] = []
    if settings.slack_bot_token is not None and settings.slack_channel:
        channels.append(SlackBotChannel(settings.slack_bot_token.get_secret_value(), settings.slack_channel,
                                        settings.slack_base_url))
    elif settings.slack_webhook_url is not None:
        channels.append(SlackWebhookChannel(settings.slack_webhook_url.get_secret_value()))
    if settings.alert_webhook_url:
        secret = settings.alert_webhook_secret.get_secret_value() if settings.alert_webhook_secret else None
        channels.append(WebhookChannel(settings.alert_webhook_url, secret))
    if settings.alert_hook:
        channels.append(HookChannel(load_hook(settings.alert_hook)))
    if not channels:
        return ConsoleChannel()
    return channels[0] if len(channels) == 1 else FanOutChannel(channels)
