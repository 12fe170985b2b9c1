//! Alertmanager's `/api/v2/alerts`: one alert per token and condition, re-sent while it lasts.
