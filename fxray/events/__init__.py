"""Events: CloudEvents helpers (:mod:`.cloudevent`), the event catalog, event mappings,
dead letters and cron schedules (events too)."""
