//! The booking hot path's writes on the embedded store, run on the [`SqliteWriter`] thread.
//!
//! Same statements and the same guards as the PostgreSQL engine's (`postgres::inventory`):
//! fences raised only upwards, the general-admission CHECK, the unique ticket index, the hold's
//! token compared with every seat's fence. The conformance suite and the inventory's model test
//! run the traits against both engines, so the two versions cannot drift apart unnoticed.
//!
//! [`SqliteWriter`]: crate::sqlite::writer::SqliteWriter

use crate::common::payloads::{new_order_history, SeatChange, SeatChangeRecord};
use crate::common::rows::{millis, to_i64, HoldRow, HOLD_COLUMNS, ORDER_COLUMNS};
use crate::sqlite::writer::sqlite;
use crate::{ChangeKind, StoreError, StoredResponse};
use marquee_domain::{
    EventId, GeneralAdmissionQuantity, Hold, HoldId, HoldStatus, Order, SeatId, UserId,
};
use rusqlite::{params, Connection, OptionalExtension};

fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

fn change_general_admission(
    connection: &Connection,
    event: &EventId,
    section: &str,
    held_delta: i64,
    sold_delta: i64,
) -> Result<(), StoreError> {
    let updated = connection
        .prepare_cached(
            "UPDATE general_admission SET held = held + ?1, sold = sold + ?2 \
             WHERE event_id = ?3 AND section = ?4 \
             AND held + ?1 >= 0 AND sold + ?2 >= 0 AND held + ?1 + sold + ?2 <= capacity",
        )
        .and_then(|mut statement| {
            statement.execute(params![held_delta, sold_delta, event.as_str(), section])
        })
        .map_err(sqlite)?;
    if updated == 1 {
        Ok(())
    } else {
        Err(StoreError::CapacityExceeded {
            section: section.to_string(),
        })
    }
}

/// Bumps the event's seat sequence and appends the change to the outbox.
fn announce_seats(
    connection: &Connection,
    kind: ChangeKind,
    change: &SeatChange<'_>,
) -> Result<(), StoreError> {
    let version: i64 = connection
        .prepare_cached(
            "UPDATE events SET seat_version = seat_version + 1 WHERE id = ?1 RETURNING seat_version",
        )
        .and_then(|mut statement| {
            statement.query_row([change.event_id.as_str()], |row| row.get(0))
        })
        .map_err(sqlite)?;
    let record = SeatChangeRecord {
        change,
        status: SeatChangeRecord::status_of(kind),
        version,
    };
    let payload = serde_json::to_string(&record)?;
    connection
        .prepare_cached(
            "INSERT INTO outbox (entity, entity_id, kind, payload, recorded_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                kind.entity().as_str(),
                change.event_id.as_str(),
                kind.as_str(),
                payload,
                millis(marquee_domain::timestamp_now()),
            ])
        })
        .map_err(sqlite)?;
    Ok(())
}

pub(crate) fn create_hold(
    connection: &Connection,
    hold: &Hold,
    ga_capacity: Option<u32>,
) -> Result<(), StoreError> {
    let token = to_i64(hold.fencing_token);
    if !hold.seat_ids.is_empty() {
        let mut sold_check = connection
            .prepare_cached(
                "SELECT 1 FROM tickets WHERE event_id = ?1 AND seat_id = ?2 AND valid = 1",
            )
            .map_err(sqlite)?;
        let mut sold = Vec::new();
        for seat in &hold.seat_ids {
            if sold_check
                .exists(params![hold.event_id.as_str(), seat.as_str()])
                .map_err(sqlite)?
            {
                sold.push(seat.to_string());
            }
        }
        if !sold.is_empty() {
            return Err(StoreError::SeatsSold { seat_ids: sold });
        }
        let mut raise = connection
            .prepare_cached(
                "INSERT INTO seat_fences (event_id, seat_id, token) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (event_id, seat_id) DO UPDATE SET token = excluded.token \
                 WHERE seat_fences.token < excluded.token",
            )
            .map_err(sqlite)?;
        for seat in &hold.seat_ids {
            raise
                .execute(params![hold.event_id.as_str(), seat.as_str(), token])
                .map_err(sqlite)?;
        }
    }
    if let (Some(general), Some(capacity)) = (&hold.general_admission, ga_capacity) {
        connection
            .prepare_cached(
                "INSERT INTO general_admission (event_id, section, capacity) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (event_id, section) DO NOTHING",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    hold.event_id.as_str(),
                    general.section,
                    i64::from(capacity)
                ])
            })
            .map_err(sqlite)?;
        change_general_admission(
            connection,
            &hold.event_id,
            &general.section,
            i64::from(general.quantity),
            0,
        )?;
    }
    let seat_ids = serde_json::to_string(&hold.seat_ids)?;
    connection
        .prepare_cached(
            "INSERT INTO holds (id, event_id, user_id, seat_ids, ga_section, ga_quantity, \
             fencing_token, status, extended, expires_at, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                hold.id.as_str(),
                hold.event_id.as_str(),
                hold.user_id.as_str(),
                seat_ids,
                hold.general_admission.as_ref().map(|g| g.section.as_str()),
                hold.general_admission
                    .as_ref()
                    .map_or(0, |g| i64::from(g.quantity)),
                token,
                hold.status.as_str(),
                i64::from(hold.extended),
                millis(hold.expires_at),
                millis(hold.created_at),
            ])
        })
        .map_err(sqlite)?;
    announce_seats(
        connection,
        ChangeKind::SeatsHeld,
        &SeatChange::of_hold(hold, "held"),
    )
}

pub(crate) fn hold(connection: &Connection, id: &HoldId) -> Result<Option<Hold>, StoreError> {
    connection
        .prepare_cached(&format!("SELECT {HOLD_COLUMNS} FROM holds WHERE id = ?1"))
        .and_then(|mut statement| {
            statement
                .query_row([id.as_str()], |row| {
                    Ok(HoldRow {
                        id: row.get("id")?,
                        event_id: row.get("event_id")?,
                        user_id: row.get("user_id")?,
                        seat_ids: row.get("seat_ids")?,
                        ga_section: row.get("ga_section")?,
                        ga_quantity: row.get("ga_quantity")?,
                        fencing_token: row.get("fencing_token")?,
                        status: row.get("status")?,
                        extended: row.get("extended")?,
                        expires_at: row.get("expires_at")?,
                        created_at: row.get("created_at")?,
                    })
                })
                .optional()
        })
        .map_err(sqlite)?
        .map(HoldRow::into_hold)
        .transpose()
}

pub(crate) fn end_hold(
    connection: &Connection,
    id: &HoldId,
    status: HoldStatus,
) -> Result<bool, StoreError> {
    // One statement ends the hold and returns what the announcement needs.
    let ended = connection
        .prepare_cached(
            "UPDATE holds SET status = ?1 WHERE id = ?2 AND status = 'active' \
             RETURNING event_id, user_id, seat_ids, ga_section, ga_quantity",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![status.as_str(), id.as_str()], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, Option<String>>(3)?,
                        row.get::<_, i64>(4)?,
                    ))
                })
                .optional()
        })
        .map_err(sqlite)?;
    let Some((event_id, user_id, seat_ids, ga_section, ga_quantity)) = ended else {
        let exists = connection
            .prepare_cached("SELECT 1 FROM holds WHERE id = ?1")
            .and_then(|mut statement| statement.exists([id.as_str()]))
            .map_err(sqlite)?;
        return if exists {
            Ok(false)
        } else {
            Err(StoreError::NotFound)
        };
    };
    let event_id = EventId::from_string(event_id);
    let user_id = UserId::from_string(user_id);
    let seat_ids: Vec<SeatId> = serde_json::from_str(&seat_ids)?;
    let general_admission = ga_section.map(|section| GeneralAdmissionQuantity {
        section,
        quantity: u32::try_from(ga_quantity).unwrap_or(0),
    });
    if let Some(general) = &general_admission {
        change_general_admission(
            connection,
            &event_id,
            &general.section,
            -i64::from(general.quantity),
            0,
        )?;
    }
    announce_seats(
        connection,
        ChangeKind::SeatsAvailable,
        &SeatChange {
            event_id: &event_id,
            hold_id: id,
            user_id: &user_id,
            order_id: None,
            seat_ids: &seat_ids,
            general_admission: general_admission.as_ref(),
            reason: status.as_str(),
            expires_at: None,
        },
    )?;
    Ok(true)
}

pub(crate) fn confirm_order(
    connection: &Connection,
    order: &Order,
    hold: &Hold,
) -> Result<(), StoreError> {
    let token = to_i64(hold.fencing_token);
    // The event must still be on sale: a cancellation that committed first wins.
    let converted = connection
        .prepare_cached(
            "UPDATE holds SET status = 'ordered' WHERE id = ?1 AND status = 'active' \
             AND fencing_token = ?2 AND expires_at > ?3 AND EXISTS \
             (SELECT 1 FROM events WHERE events.id = holds.event_id AND events.status = 'published')",
        )
        .and_then(|mut statement| {
            statement.execute(params![hold.id.as_str(), token, millis(order.created_at)])
        })
        .map_err(sqlite)?;
    if converted == 0 {
        return Err(StoreError::HoldNotActive);
    }
    if !hold.seat_ids.is_empty() {
        let mut fence = connection
            .prepare_cached(
                "SELECT 1 FROM seat_fences WHERE event_id = ?1 AND seat_id = ?2 AND token = ?3",
            )
            .map_err(sqlite)?;
        for seat in &hold.seat_ids {
            let current = fence
                .exists(params![hold.event_id.as_str(), seat.as_str(), token])
                .map_err(sqlite)?;
            if !current {
                return Err(StoreError::Fenced);
            }
        }
    }
    if let Some(general) = &hold.general_admission {
        let quantity = i64::from(general.quantity);
        change_general_admission(
            connection,
            &hold.event_id,
            &general.section,
            -quantity,
            quantity,
        )?;
    }
    connection
        .prepare_cached(&format!(
            "INSERT INTO orders ({ORDER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        ))
        .and_then(|mut statement| {
            statement.execute(params![
                order.id.as_str(),
                order.event_id.as_str(),
                order.user_id.as_str(),
                order.hold_id.as_str(),
                order.status.as_str(),
                order.total_cents,
                order.currency,
                order.payment_reference,
                millis(order.created_at),
            ])
        })
        .map_err(sqlite)?;
    let mut insert_ticket = connection
        .prepare_cached(
            "INSERT INTO tickets (id, order_id, event_id, seat_id, section, row_label, number, \
             price_cents, code) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(sqlite)?;
    for ticket in &order.tickets {
        let inserted = insert_ticket.execute(params![
            ticket.id.as_str(),
            order.id.as_str(),
            order.event_id.as_str(),
            ticket.seat_id.as_ref().map(SeatId::as_str),
            ticket.section,
            ticket.row,
            ticket.number.map(i64::from),
            ticket.price_cents,
            ticket.code,
        ]);
        match inserted {
            Err(error) if is_unique_violation(&error) => {
                return Err(StoreError::SeatsSold {
                    seat_ids: hold.seat_ids.iter().map(ToString::to_string).collect(),
                })
            }
            other => other.map_err(sqlite)?,
        };
    }
    let (created, paid) = new_order_history(order);
    connection
        .prepare_cached(
            "INSERT INTO order_events (order_id, sequence, kind, data, recorded_at) \
             VALUES (?1, 1, 'created', ?2, ?4), (?1, 2, 'paid', ?3, ?4)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                order.id.as_str(),
                created,
                paid,
                millis(order.created_at),
            ])
        })
        .map_err(sqlite)?;
    announce_seats(
        connection,
        ChangeKind::SeatsSold,
        &SeatChange {
            order_id: Some(&order.id),
            ..SeatChange::of_hold(hold, "ordered")
        },
    )
}

pub(crate) fn save_idempotent_response(
    connection: &Connection,
    user: &UserId,
    key: &str,
    response: &StoredResponse,
) -> Result<bool, StoreError> {
    let inserted = connection
        .prepare_cached(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, status_code, response, \
             created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (user_id, key) DO NOTHING",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                user.as_str(),
                key,
                response.request_hash,
                i64::from(response.status_code),
                response.body,
                millis(marquee_domain::timestamp_now()),
            ])
        })
        .map_err(sqlite)?;
    Ok(inserted == 1)
}
