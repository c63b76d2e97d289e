-- E-mail addresses are taken only in their plain form (meteorpi_model.watch.email_refusal): the
-- older rule let through addresses that Python's mail library reads as another address, or as
-- none ('x1:target@example.org' was mailed to target@example.org, 'a(target@example.org' to
-- 'a'). Watches stored with such an address stop, saying why; they are still listed and can be
-- deleted, and the notifier never mails such an address whatever its watch's state. The
-- expression is the model's EMAIL_PATTERN and its 254-character limit (tests/test_watch_migrations.py
-- checks that both refuse the same addresses).
UPDATE watch SET enabled = false,
    disabled_reason = 'its address is not one this archive mails any more (only the plain form is taken: '
                      'letters, digits and . _ % + - before the @, a domain of letters, digits and hyphens); '
                      'delete the watch and add it again with a plain address'
WHERE email IS NOT NULL AND enabled AND NOT (
    length(email) <= 254
    AND email ~ '^[A-Za-z0-9_%+-]+(\.[A-Za-z0-9_%+-]+)*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$');
