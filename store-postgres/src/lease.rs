//! The leader lease: one row (`leader`) naming the coordinator that leads,
//! the term of its lease (a fencing token: it only grows) and when it
//! expires. Times are the database's clock (`clock_timestamp()`), so
//! coordinators whose clocks disagree still agree on who leads.
//!
//! Taking the lease increments the term; the fencing triggers refuse every
//! write made under any other term ([`crate::schema`]). A leader renews
//! well before expiry; a coordinator that cannot renew (cut off from the
//! database, paused) loses the lease to the next that asks after it
//! expires, and from that moment its writes are refused.

use postgres::Client;
use tessera_store::Result;

use crate::pg_err;

/// A lease this coordinator took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    /// The fencing token: writes under any other term are refused.
    pub term: i64,
    /// When it expires, in the database's Unix milliseconds.
    pub expires_ms: i64,
}

/// The lease as the database has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseState {
    /// Empty before anyone led.
    pub holder: String,
    pub term: i64,
    pub expires_ms: i64,
    /// The database's clock now, Unix milliseconds.
    pub now_ms: i64,
}

impl LeaseState {
    /// Whether someone holds a lease that has not expired.
    pub fn live(&self) -> bool {
        !self.holder.is_empty() && self.expires_ms > self.now_ms
    }
}

const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Takes the lease for `holder` for `ttl_ms` if it is free, expired or
/// already `holder`'s; a new term either way (a restarted coordinator's
/// earlier connections are fenced too). `None` while another holds a live
/// lease.
pub fn acquire(client: &mut Client, holder: &str, ttl_ms: i64) -> Result<Option<Lease>> {
    let sql = format!(
        "UPDATE leader SET holder = $1, term = term + 1, expires_ms = {NOW_MS} + $2
         WHERE id = 1 AND (holder = $1 OR holder = '' OR expires_ms <= {NOW_MS})
         RETURNING term, expires_ms"
    );
    let row = client.query_opt(&sql, &[&holder, &ttl_ms]).map_err(pg_err)?;
    Ok(row.map(|r| Lease { holder: holder.to_owned(), term: r.get(0), expires_ms: r.get(1) }))
}

/// Extends `holder`'s lease of `term` by `ttl_ms` from now; `false` if the
/// lease has another term now (taken over) or is not `holder`'s.
pub fn renew(client: &mut Client, holder: &str, term: i64, ttl_ms: i64) -> Result<bool> {
    let sql = format!("UPDATE leader SET expires_ms = {NOW_MS} + $3 WHERE id = 1 AND holder = $1 AND term = $2");
    Ok(client.execute(&sql, &[&holder, &term, &ttl_ms]).map_err(pg_err)? == 1)
}

/// Gives the lease up (a clean shutdown), so a standby need not wait for
/// it to expire.
pub fn release(client: &mut Client, holder: &str, term: i64) -> Result<bool> {
    let sql = format!("UPDATE leader SET expires_ms = {NOW_MS} WHERE id = 1 AND holder = $1 AND term = $2");
    Ok(client.execute(&sql, &[&holder, &term]).map_err(pg_err)? == 1)
}

/// The lease as it is now.
pub fn state(client: &mut Client) -> Result<LeaseState> {
    let sql = format!("SELECT holder, term, expires_ms, {NOW_MS} FROM leader WHERE id = 1");
    let r = client.query_one(&sql, &[]).map_err(pg_err)?;
    Ok(LeaseState { holder: r.get(0), term: r.get(1), expires_ms: r.get(2), now_ms: r.get(3) })
}

/// A coordinator of the farm as it announced itself (`coordinators`
/// table): where its API and QUIC listener are and which identity workers
/// pin, refreshed every second or so by each coordinator, leader or
/// standby. Not fenced: each writes only its own row, and the row is a
/// hint (where to send a client), never a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    /// Its HTTP API and page (`http://host:port`).
    pub http_url: String,
    pub quic_addr: String,
    pub fingerprint: String,
    /// How long ago it last announced itself, by the database's clock.
    pub age_ms: i64,
}

/// Records (or refreshes) `member`'s announcement; its `age_ms` is ignored.
pub fn announce(client: &mut Client, member: &Member) -> Result<()> {
    let sql = format!(
        "INSERT INTO coordinators (name, http_url, quic_addr, fingerprint, seen_ms) VALUES ($1, $2, $3, $4, {NOW_MS})
         ON CONFLICT (name) DO UPDATE SET http_url = $2, quic_addr = $3, fingerprint = $4, seen_ms = {NOW_MS}"
    );
    client.execute(&sql, &[&member.name, &member.http_url, &member.quic_addr, &member.fingerprint]).map_err(pg_err)?;
    Ok(())
}

/// The coordinators that announced themselves within `within_ms`, by name.
pub fn members(client: &mut Client, within_ms: i64) -> Result<Vec<Member>> {
    let sql = format!(
        "SELECT name, http_url, quic_addr, fingerprint, {NOW_MS} - seen_ms FROM coordinators
         WHERE seen_ms >= {NOW_MS} - $1 ORDER BY name COLLATE \"C\""
    );
    let rows = client.query(&sql, &[&within_ms]).map_err(pg_err)?;
    Ok(rows
        .iter()
        .map(|r| Member {
            name: r.get(0),
            http_url: r.get(1),
            quic_addr: r.get(2),
            fingerprint: r.get(3),
            age_ms: r.get(4),
        })
        .collect())
}
