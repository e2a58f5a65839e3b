"""Mail: the outbox that delivers messages off the request path (outbox.py). What the
messages say is the pages' business (web/mails.py), installed as the outbox's composer."""
