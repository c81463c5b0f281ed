-- Flood control (#12): each claim counts the mails sent on their own within [notify]
-- rate_window, per recipient list. This index keeps that a range scan over the window instead
-- of a scan of every mail ever sent.
CREATE INDEX outbox_sent_recent ON outbox (sent_at) WHERE status = 'sent' AND sent_in IS NULL;
