"""The code and refresh grants' writes in the form the group commit runs them (store/hot.py):
redeem a code, or rotate a refresh token, and issue the new access/refresh pair, only when
everything about the request checks out; otherwise write nothing, and the grant's full
path (oauth/token.py) finds out why and answers as it always has.

So this path only ever commits the outcome the full path would have committed for a
request that succeeds: the conditional UPDATE that spends the code or token is the same
one (exactly one of parallel presentations wins), and everything unusual (a binding that
does not match, a disabled user, a staff scope, an OpenID Connect or bot code, a narrowed
scope) is left to the full path, which spends the code and reports the error or ends the
grant as before.
"""

from __future__ import annotations

import sqlite3

from fluxer_oauth.core.scopes import STAFF_ONLY_SCOPES
from fluxer_oauth.store.oauth import GRANT_TOUCH_INTERVAL
from fluxer_oauth.store.records import NewToken, Redemption
from fluxer_oauth.store.tables import ACCESS, REFRESH

REDEEM_CODE = "redeem_code"
ROTATE_REFRESH = "rotate_refresh"
OPERATIONS = (REDEEM_CODE, ROTATE_REFRESH)


def _without_scopes(column: str, names) -> str:
    """SQL: none of ``names`` is among the space-separated scopes of ``column``."""
    return " AND ".join(f"(' ' || {column} || ' ') NOT LIKE '% {name} %'" for name in sorted(names))


# Staff-only scopes need the application's trust and the user's staff flag re-checked;
# openid needs an id_token: both go the full path.
_NO_STAFF_SCOPES = _without_scopes("{t}.scopes", STAFF_ONLY_SCOPES)
_PLAIN_CODE_SCOPES = _without_scopes("c.scopes", STAFF_ONLY_SCOPES | {"openid"})
# A scalar subquery, evaluated for the row found by its key, and not EXISTS: PostgreSQL turned
# EXISTS into a join that walked all of the user's tokens through (user, application)
# looking for the key, a cost that grew with every token the user was issued.
_USER_ENABLED = "(SELECT u.disabled_at IS NULL FROM users u WHERE u.id = {t}.user_id)"

_TOKEN_COLUMNS = ("token_hash, kind, application_id, user_id, grant_id, family_id, issue_id, scopes, guild_id, "
                  "created_at, expires_at, revoked_at, rotated")

# --- SQLite: one request at a time, in the batch's transaction ---------------------------------

_SQLITE_CONSUME_CODE = (
    "UPDATE authorization_codes AS c SET consumed_at = :now "
    "WHERE c.code_hash = :key AND c.application_id = :application_id AND c.consumed_at IS NULL "
    "AND c.expires_at > :now AND c.guild_id IS NULL AND " + _PLAIN_CODE_SCOPES + " "
    # The binding of the authorization request (oauth/token.py _check_code_binding, written
    # as a condition): the redirect_uri when one was given either time, then PKCE.
    "AND ((NOT c.redirect_uri_explicit AND :redirect_uri IS NULL) OR c.redirect_uri = :redirect_uri) "
    "AND CASE WHEN c.code_challenge IS NULL THEN :challenge IS NULL AND NOT :public_client "
    "ELSE c.code_challenge = :challenge END "
    "AND " + _USER_ENABLED.format(t="c") + " "
    # (SQLite's RETURNING names the updated table's columns unqualified.)
    "RETURNING user_id, grant_id, family_id, scopes"
)
_SQLITE_ROTATE_REFRESH = (
    "UPDATE tokens AS t SET revoked_at = :now, rotated = 1 "
    f"WHERE t.token_hash = :key AND t.kind = {REFRESH} AND t.application_id = :application_id "
    "AND t.revoked_at IS NULL AND t.expires_at > :now AND " + _NO_STAFF_SCOPES.format(t="t") + " "
    "AND " + _USER_ENABLED.format(t="t") + " "
    "RETURNING user_id, grant_id, family_id, scopes, issue_id"
)
# The rest of the spent token's issue (store/oauth.py revoke_issue): its access token, and the
# pairs of retries within the reuse leeway, their refresh tokens counted as rotated.
_SQLITE_END_ISSUE = (
    f"UPDATE tokens SET revoked_at = ?, rotated = (kind = {REFRESH}) WHERE issue_id = ? AND grant_id IS NOT NULL "
    "AND revoked_at IS NULL RETURNING token_hash"
)
_SQLITE_TOUCH_GRANT = ("UPDATE grants SET last_used_at = ? WHERE id = ? "
                       "AND (last_used_at IS NULL OR last_used_at <= ?)")


def run_sqlite(connection: sqlite3.Connection, operation: str, row: Redemption, ended: list[bytes],
               issued: list[NewToken], touched: dict[int, float]) -> str | None:
    """Spends one code or refresh token inside the caller's transaction: the scopes of the
    pair to issue, or None when nothing was written. The pair is added to ``issued`` and the
    grant to ``touched`` (the caller writes both for the whole batch: one multi-row INSERT,
    one touch a grant); the stored keys of tokens it ended are added to ``ended`` (the hot
    store's cache forgets them)."""
    values = row._asdict()
    if operation == REDEEM_CODE:
        spent = connection.execute(_SQLITE_CONSUME_CODE, values).fetchone()
    else:
        spent = connection.execute(_SQLITE_ROTATE_REFRESH, values).fetchone()
    if spent is None:
        return None
    user_id, grant_id, family_id, scopes = spent[:4]
    if operation == ROTATE_REFRESH:
        ended.append(row.key)
        ended.extend(found[0] for found in connection.execute(_SQLITE_END_ISSUE, (row.now, spent[4])))
    issued.append(NewToken(row.access_hash, ACCESS, row.application_id, user_id, grant_id, family_id, row.issue_id,
                           scopes, None, row.now, row.access_expires_at))
    issued.append(NewToken(row.refresh_hash, REFRESH, row.application_id, user_id, grant_id, family_id, row.issue_id,
                           scopes, None, row.now, row.refresh_expires_at))
    if grant_id is not None:
        touched[grant_id] = row.now
    return scopes


def touch_grants_sqlite(connection: sqlite3.Connection, touched: dict[int, float]) -> None:
    """Each grant's "last used", as touch_grant (at most once a minute)."""
    connection.executemany(_SQLITE_TOUCH_GRANT, [(at, grant_id, at - GRANT_TOUCH_INTERVAL)
                                                 for grant_id, at in touched.items()])


# --- PostgreSQL: the whole batch in one statement ------------------------------------------------

# The batch's requests, one row each (n: its place in the batch). Before any row is read,
# the applications' issuance locks are taken shared, in ascending order (as the endings take
# theirs exclusively), in one uncorrelated subquery that PostgreSQL evaluates once, first:
# see store/oauth.py HOLDING_APPLICATION, of which this is the form for many applications.
_POSTGRES_INPUT = (
    "input AS (SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::float8[], $4::bytea[], $5::bytea[], "
    "$6::bigint[], $7::float8[], $8::float8[], $9::text[], $10::text[], $11::boolean[], $12::int[]) "
    "AS i(key, application_id, now, access_hash, refresh_hash, issue_id, access_expires_at, "
    "refresh_expires_at, redirect_uri, challenge, public_client, n) "
    "WHERE (SELECT coalesce(string_agg(pg_advisory_xact_lock_shared(a)::text, ''), '') "
    "FROM (SELECT DISTINCT a FROM unnest($2::bigint[]) AS a ORDER BY a) AS locking) = '')"
)
_SPENT_COLUMNS = ("i.n, i.application_id, i.now, i.access_hash, i.refresh_hash, i.issue_id, i.access_expires_at, "
                  "i.refresh_expires_at, {t}.user_id, {t}.grant_id, {t}.family_id, {t}.scopes")
# The pair of every spent row, and the grants' "last used" (as touch_grant, skipping a grant
# row another transaction is touching right now rather than waiting for it: waits between
# batches that touch several grants could deadlock).
_POSTGRES_ISSUE = (
    f", issued AS (INSERT INTO tokens ({_TOKEN_COLUMNS}) "
    "SELECT p.h, p.k, s.application_id, s.user_id, s.grant_id, s.family_id, s.issue_id, s.scopes, NULL, s.now, "
    "p.e, NULL, false FROM spent s CROSS JOIN LATERAL (VALUES "
    f"(s.access_hash, {ACCESS}::smallint, s.access_expires_at), "
    f"(s.refresh_hash, {REFRESH}::smallint, s.refresh_expires_at)) AS p(h, k, e)), "
    "touched AS (UPDATE grants SET last_used_at = $13 WHERE id IN (SELECT g.id FROM grants g "
    "WHERE g.id IN (SELECT grant_id FROM spent) AND (g.last_used_at IS NULL OR g.last_used_at <= $14) "
    "FOR UPDATE SKIP LOCKED)) "
    "SELECT n, scopes FROM spent"
)
POSTGRES_BATCHES = {
    REDEEM_CODE: (
        "WITH " + _POSTGRES_INPUT + ", spent AS (UPDATE authorization_codes c SET consumed_at = i.now FROM input i "
        "WHERE c.code_hash = i.key AND c.application_id = i.application_id AND c.consumed_at IS NULL "
        "AND c.expires_at > i.now AND c.guild_id IS NULL AND " + _PLAIN_CODE_SCOPES + " "
        "AND ((NOT c.redirect_uri_explicit AND i.redirect_uri IS NULL) OR c.redirect_uri = i.redirect_uri) "
        "AND CASE WHEN c.code_challenge IS NULL THEN i.challenge IS NULL AND NOT i.public_client "
        "ELSE c.code_challenge = i.challenge END "
        "AND " + _USER_ENABLED.format(t="c") + " "
        "RETURNING " + _SPENT_COLUMNS.format(t="c") + ")" + _POSTGRES_ISSUE
    ),
    ROTATE_REFRESH: (
        "WITH " + _POSTGRES_INPUT + ", spent AS (UPDATE tokens t SET revoked_at = i.now, rotated = true "
        # At most one token of an issue is spent by a batch: of pairs of reuse-leeway retries
        # refreshed at once, the first ends the others (below), which go the full path and
        # find themselves ended. (SQLite runs a batch's rows one after the other.)
        "FROM (SELECT DISTINCT ON (o.issue_id) i.* FROM input i JOIN tokens o ON o.token_hash = i.key "
        "ORDER BY o.issue_id, i.n) AS i "
        f"WHERE t.token_hash = i.key AND t.kind = {REFRESH} AND t.application_id = i.application_id "
        "AND t.revoked_at IS NULL AND t.expires_at > i.now AND " + _NO_STAFF_SCOPES.format(t="t") + " "
        "AND " + _USER_ENABLED.format(t="t") + " "
        "RETURNING " + _SPENT_COLUMNS.format(t="t") + ", t.issue_id AS old_issue_id, t.token_hash AS spent_key), "
        # The rest of the spent token's issue ends with it (revoke_issue): the access token
        # issued with it, and the pairs of reuse-leeway retries, their refresh tokens counted
        # as rotated. A row another transaction holds is skipped, not waited for (two
        # siblings refreshed at once would deadlock), and none this statement spends is touched.
        f"ended AS (UPDATE tokens t SET revoked_at = s.now, rotated = (t.kind = {REFRESH}) FROM spent s "
        "WHERE t.issue_id = s.old_issue_id AND t.grant_id IS NOT NULL AND t.revoked_at IS NULL "
        "AND t.token_hash IN (SELECT o.token_hash FROM tokens o WHERE o.issue_id IN (SELECT old_issue_id FROM spent) "
        "AND o.grant_id IS NOT NULL AND o.revoked_at IS NULL AND o.token_hash NOT IN (SELECT spent_key FROM spent) "
        "FOR UPDATE OF o SKIP LOCKED))" + _POSTGRES_ISSUE
    ),
}


def postgres_arguments(rows: list[Redemption]) -> list:
    """The batch statement's arguments: one array per column, then the grants' touch time
    and the "stale before" bound."""
    columns = [list(column) for column in zip(*rows)]
    latest = max(row.now for row in rows)
    return [*columns, list(range(len(rows))), latest, latest - GRANT_TOUCH_INTERVAL]
