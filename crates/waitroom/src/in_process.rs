//! The waiting room of one node: every room in memory behind its own lock.
//!
//! A room keeps one 40-byte slot per place ever taken (indexed by join number, which the token
//! carries, so a lookup is an index), a map from account to place, and the queue order as an
//! appendable Fenwick tree: a position is a prefix sum. Presence is a min-heap of (last seen,
//! place) records re-pushed lazily, so touching a place is a field write and the idle sweep pops
//! only what is due or out of date. A million queued fans take about 110 MiB.

use crate::fenwick::Fenwick;
use crate::pacing::Pacer;
use crate::signing::order_key;
use crate::{
    room_secret, Admission, Control, Millis, PassClaims, PassRefusal, Place, Result, RoomConfig,
    RoomSigner, RoomState, RoomStats, RoomTimings, Standing, TickOutcome, WaitingRoom,
    WaitroomError,
};
use async_trait::async_trait;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use ulid::Ulid;

const NOT_QUEUED: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    PreQueue,
    Waiting,
    Admitted,
    /// Admitted, and the pass has run out.
    PassExpired,
    Left,
    Abandoned,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    user: [u8; 16],
    /// Index in queue order, or [`NOT_QUEUED`] before opening.
    order: u32,
    state: SlotState,
    last_seen: Millis,
    /// When the pass expires (admitted slots).
    expires_at: Millis,
}

struct Room {
    config: RoomConfig,
    secret: [u8; 32],
    state: RoomState,
    opened: bool,
    slots: Vec<Slot>,
    by_user: HashMap<[u8; 16], u32>,
    /// Pre-queue places (some may have left since) until opening draws their order.
    early: Vec<u32>,
    early_live: u64,
    /// Queue order: index → place.
    order: Vec<u32>,
    waiting_at: Fenwick,
    head: usize,
    waiting: u64,
    /// (last seen as recorded, place), oldest first; a record older than the place's real
    /// last-seen time is re-pushed with the real one when it comes up.
    presence: BinaryHeap<Reverse<(Millis, u32)>>,
    /// (pass expiry, place), soonest first (the TTL may change between admissions).
    passes: BinaryHeap<Reverse<(Millis, u32)>>,
    active: u64,
    pacer: Pacer,
    /// Last time a fan had to wait.
    busy_at: Millis,
    admitted_total: u64,
    abandoned_total: u64,
}

impl Room {
    fn new(config: RoomConfig) -> Room {
        Room {
            config,
            secret: room_secret(),
            state: RoomState::Active,
            opened: false,
            slots: Vec::new(),
            by_user: HashMap::new(),
            early: Vec::new(),
            early_live: 0,
            order: Vec::new(),
            waiting_at: Fenwick::new(),
            head: 0,
            waiting: 0,
            presence: BinaryHeap::new(),
            passes: BinaryHeap::new(),
            active: 0,
            pacer: Pacer::default(),
            busy_at: 0,
            admitted_total: 0,
            abandoned_total: 0,
        }
    }

    fn configure(&mut self, config: &RoomConfig) {
        let (opens_at, join_from) = if self.opened {
            (self.config.opens_at, self.config.join_from)
        } else {
            (config.opens_at, config.join_from)
        };
        self.config = RoomConfig {
            opens_at,
            join_from,
            ..config.clone()
        };
    }

    /// Draws the pre-queue's order and starts admitting, once `now` reaches the opening.
    fn open_if_due(&mut self, now: Millis) {
        if self.opened || now < self.config.opens_at {
            return;
        }
        self.opened = true;
        self.pacer = Pacer::opened(now);
        self.busy_at = now;
        let mut draws: Vec<(u64, u32)> = self
            .early
            .iter()
            .filter(|seq| self.slots[**seq as usize].state == SlotState::PreQueue)
            .map(|seq| {
                let user = Ulid(u128::from_be_bytes(self.slots[*seq as usize].user));
                (order_key(&self.secret, user), *seq)
            })
            .collect();
        draws.sort_unstable();
        self.early = Vec::new();
        self.early_live = 0;
        for (_, seq) in draws {
            self.enqueue(seq);
        }
    }

    fn enqueue(&mut self, seq: u32) {
        let index = self.waiting_at.push(1);
        self.order.push(seq);
        let slot = &mut self.slots[seq as usize];
        slot.order = u32::try_from(index).unwrap_or(NOT_QUEUED);
        slot.state = SlotState::Waiting;
        self.waiting += 1;
    }

    /// Takes a place out of the line (it was admitted, left or abandoned).
    fn dequeue(&mut self, seq: u32, to: SlotState) {
        let slot = &mut self.slots[seq as usize];
        match slot.state {
            SlotState::Waiting => {
                self.waiting_at.remove(slot.order as usize);
                self.waiting -= 1;
            }
            SlotState::PreQueue => self.early_live -= 1,
            SlotState::Admitted => {
                self.active = self.active.saturating_sub(1);
                slot.expires_at = 0;
            }
            SlotState::PassExpired | SlotState::Left | SlotState::Abandoned => return,
        }
        slot.state = to;
        let user = slot.user;
        if to != SlotState::Admitted {
            self.forget_user(user, seq);
        }
    }

    /// Unmaps the account from `seq` (not from a newer place it may have taken since).
    fn forget_user(&mut self, user: [u8; 16], seq: u32) {
        if self.by_user.get(&user) == Some(&seq) {
            self.by_user.remove(&user);
        }
    }

    fn live(&self, seq: u32, now: Millis) -> bool {
        let slot = &self.slots[seq as usize];
        match slot.state {
            SlotState::PreQueue | SlotState::Waiting => true,
            SlotState::Admitted => slot.expires_at > now,
            SlotState::PassExpired | SlotState::Left | SlotState::Abandoned => false,
        }
    }

    fn admit_one(&mut self, seq: u32, now: Millis, signer: &RoomSigner) -> Admission {
        self.dequeue(seq, SlotState::Admitted);
        let expires_at = now.saturating_add(self.config.pass_ttl_ms);
        let slot = &mut self.slots[seq as usize];
        slot.expires_at = expires_at;
        let user = Ulid(u128::from_be_bytes(slot.user));
        self.passes.push(Reverse((expires_at, seq)));
        self.active += 1;
        self.admitted_total += 1;
        Admission {
            token: signer.token(self.config.event, u64::from(seq)),
            user,
            pass: signer.pass(&PassClaims {
                event: self.config.event,
                user,
                seq: u64::from(seq),
                expires_at,
            }),
            expires_at,
        }
    }

    /// Admits what the pacing (and the cap on active fans) allows, from the front of the line.
    fn admit(&mut self, now: Millis, signer: &RoomSigner) -> Vec<Admission> {
        if !self.opened || self.state != RoomState::Active {
            return Vec::new();
        }
        // Fans were left waiting at the previous step (so the time since counts for the rate).
        let backlogged = self.busy_at >= self.pacer.rate_at;
        self.pacer.accrue(now, self.config.admit_per_minute);
        let mut room_for = self.pacer.credit.floor() as u64;
        if let Some(cap) = self.config.max_active {
            room_for = room_for.min(u64::from(cap).saturating_sub(self.active));
        }
        let mut admitted = Vec::new();
        while (admitted.len() as u64) < room_for && self.head < self.order.len() {
            let seq = self.order[self.head];
            if self.slots[seq as usize].state == SlotState::Waiting {
                admitted.push(self.admit_one(seq, now, signer));
            }
            self.head += 1;
        }
        self.pacer.credit -= admitted.len() as f64;
        self.pacer.record(now, admitted.len() as u64, backlogged);
        if self.waiting > 0 {
            self.busy_at = now;
        }
        admitted
    }

    fn expire_passes(&mut self, now: Millis) {
        while let Some(&Reverse((expires_at, seq))) = self.passes.peek() {
            if expires_at > now {
                break;
            }
            self.passes.pop();
            let slot = &mut self.slots[seq as usize];
            if slot.state == SlotState::Admitted && slot.expires_at == expires_at {
                slot.state = SlotState::PassExpired;
                let user = slot.user;
                self.active = self.active.saturating_sub(1);
                self.forget_user(user, seq);
            }
        }
    }

    fn sweep_idle(&mut self, now: Millis, idle_ms: u64) -> u64 {
        let cutoff = now.saturating_sub(idle_ms);
        let mut abandoned = 0;
        while let Some(&Reverse((seen, seq))) = self.presence.peek() {
            if seen >= cutoff {
                break;
            }
            self.presence.pop();
            let slot = self.slots[seq as usize];
            if !matches!(slot.state, SlotState::PreQueue | SlotState::Waiting) {
                continue;
            }
            if slot.last_seen < cutoff {
                self.dequeue(seq, SlotState::Abandoned);
                abandoned += 1;
            } else {
                self.presence.push(Reverse((slot.last_seen, seq)));
            }
        }
        self.abandoned_total += abandoned;
        abandoned
    }

    fn touch(&mut self, seq: u32, now: Millis) {
        let slot = &mut self.slots[seq as usize];
        if matches!(slot.state, SlotState::PreQueue | SlotState::Waiting) {
            slot.last_seen = slot.last_seen.max(now);
        }
    }

    fn standing(&self, seq: u32, now: Millis, signer: &RoomSigner) -> Standing {
        let slot = &self.slots[seq as usize];
        match slot.state {
            SlotState::PreQueue => {
                let waiting = self.early_live;
                let to_open = self.config.opens_at.saturating_sub(now);
                Standing::PreQueue {
                    waiting,
                    opens_at: self.config.opens_at,
                    eta_ms: to_open.saturating_add(crate::pacing::eta(
                        waiting.div_ceil(2),
                        crate::pacing::per_ms(self.config.admit_per_minute),
                    )),
                }
            }
            SlotState::Waiting => {
                let position = u64::from(self.waiting_at.prefix(slot.order as usize + 1));
                let eta_ms = (self.state != RoomState::Paused)
                    .then(|| self.pacer.eta_ms(position, self.config.admit_per_minute));
                Standing::Waiting { position, eta_ms }
            }
            SlotState::Admitted if slot.expires_at > now => Standing::Admitted {
                pass: signer.pass(&PassClaims {
                    event: self.config.event,
                    user: Ulid(u128::from_be_bytes(slot.user)),
                    seq: u64::from(seq),
                    expires_at: slot.expires_at,
                }),
                expires_at: slot.expires_at,
            },
            SlotState::Admitted | SlotState::PassExpired | SlotState::Abandoned => {
                Standing::Expired
            }
            SlotState::Left => Standing::Left,
        }
    }

    fn place(&self, seq: u32, now: Millis, signer: &RoomSigner) -> Place {
        Place {
            token: signer.token(self.config.event, u64::from(seq)),
            event: self.config.event,
            standing: self.standing(seq, now, signer),
            room: self.state,
        }
    }

    /// In an ended room everyone in line goes through as they ask.
    fn let_through_if_ended(&mut self, seq: u32, now: Millis, signer: &RoomSigner) {
        if self.state == RoomState::Ended
            && matches!(
                self.slots[seq as usize].state,
                SlotState::Waiting | SlotState::PreQueue
            )
        {
            self.admit_one(seq, now, signer);
        }
    }

    fn stats(&self) -> RoomStats {
        RoomStats {
            state: self.state,
            opened: self.opened,
            opens_at: self.config.opens_at,
            waiting: if self.opened {
                self.waiting
            } else {
                self.early_live
            },
            active: self.active,
            admitted_total: self.admitted_total,
            abandoned_total: self.abandoned_total,
            admit_per_minute: self.config.admit_per_minute,
            measured_per_minute: self.pacer.measured().unwrap_or(0.0) * 60_000.0,
        }
    }

    fn memory_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.by_user.capacity() * (std::mem::size_of::<([u8; 16], u32)>() + 1)
            + (self.early.capacity() + self.order.capacity()) * 4
            + self.waiting_at.memory_bytes()
            + (self.presence.capacity() + self.passes.capacity()) * 16
    }
}

/// Waiting rooms in this process.
pub struct InProcessWaitingRoom {
    signer: RoomSigner,
    timings: RoomTimings,
    rooms: RwLock<HashMap<Ulid, Arc<Mutex<Room>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update leaves a room consistent between statements that can panic only on a bug;
    // a poisoned room is still the best state there is.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl InProcessWaitingRoom {
    pub fn new(signer: RoomSigner, timings: RoomTimings) -> Self {
        InProcessWaitingRoom {
            signer,
            timings,
            rooms: RwLock::new(HashMap::new()),
        }
    }

    fn room(&self, event: Ulid) -> Option<Arc<Mutex<Room>>> {
        self.rooms
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&event)
            .cloned()
    }

    fn room_or_create(&self, config: &RoomConfig) -> Arc<Mutex<Room>> {
        if let Some(room) = self.room(config.event) {
            return room;
        }
        let mut rooms = self
            .rooms
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rooms
            .entry(config.event)
            .or_insert_with(|| Arc::new(Mutex::new(Room::new(config.clone()))))
            .clone()
    }

    /// The room and place a token names.
    fn locate(&self, token: &str) -> Result<(Arc<Mutex<Room>>, u32)> {
        let (event, seq) = self.signer.parse_token(token)?;
        let room = self.room(event).ok_or(WaitroomError::UnknownToken)?;
        let seq = u32::try_from(seq).map_err(|_| WaitroomError::UnknownToken)?;
        if seq as usize >= lock(&room).slots.len() {
            return Err(WaitroomError::UnknownToken);
        }
        Ok((room, seq))
    }

    /// Approximate heap bytes held by all rooms (for the benchmark's memory figure).
    pub fn memory_bytes(&self) -> usize {
        let rooms = self
            .rooms
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rooms.values().map(|room| lock(room).memory_bytes()).sum()
    }
}

#[async_trait]
impl WaitingRoom for InProcessWaitingRoom {
    fn backend(&self) -> &'static str {
        "in-process"
    }

    async fn join(&self, config: &RoomConfig, user: Ulid, now: Millis) -> Result<Place> {
        let room = self.room_or_create(config);
        let mut room = lock(&room);
        room.configure(config);
        if now < room.config.join_from {
            return Err(WaitroomError::NotJoinableYet {
                join_from: room.config.join_from,
            });
        }
        room.open_if_due(now);
        room.expire_passes(now);
        let key = user.0.to_be_bytes();
        if let Some(&seq) = room.by_user.get(&key) {
            if room.live(seq, now) {
                room.touch(seq, now);
                room.let_through_if_ended(seq, now, &self.signer);
                return Ok(room.place(seq, now, &self.signer));
            }
        }
        let seq = u32::try_from(room.slots.len())
            .ok()
            .filter(|seq| *seq != NOT_QUEUED)
            .ok_or(WaitroomError::Invalid("the room is full"))?;
        room.slots.push(Slot {
            user: key,
            order: NOT_QUEUED,
            state: SlotState::PreQueue,
            last_seen: now,
            expires_at: 0,
        });
        room.by_user.insert(key, seq);
        room.presence.push(Reverse((now, seq)));
        if room.opened {
            if room.state == RoomState::Inactive {
                // Joins outrunning the rate wake a quiet room up.
                let rate = room.config.admit_per_minute;
                room.pacer.accrue(now, rate);
                if room.pacer.credit < 1.0 {
                    room.state = RoomState::Active;
                }
            }
            room.enqueue(seq);
            match room.state {
                // Straight through when nobody is ahead and the pacing allows; otherwise the
                // driver's next step admits (and announces) whoever is at the front.
                RoomState::Active if room.waiting == 1 => {
                    room.admit(now, &self.signer);
                }
                RoomState::Active => {}
                RoomState::Inactive => {
                    room.pacer.credit -= 1.0;
                    room.admit_one(seq, now, &self.signer);
                }
                RoomState::Ended => room.let_through_if_ended(seq, now, &self.signer),
                RoomState::Paused => {}
            }
        } else {
            room.early.push(seq);
            room.early_live += 1;
        }
        Ok(room.place(seq, now, &self.signer))
    }

    async fn status(&self, token: &str, now: Millis) -> Result<Place> {
        let (room, seq) = self.locate(token)?;
        let mut room = lock(&room);
        room.open_if_due(now);
        room.expire_passes(now);
        room.touch(seq, now);
        room.let_through_if_ended(seq, now, &self.signer);
        Ok(room.place(seq, now, &self.signer))
    }

    async fn leave(&self, token: &str, _now: Millis) -> Result<()> {
        let (room, seq) = self.locate(token)?;
        lock(&room).dequeue(seq, SlotState::Left);
        Ok(())
    }

    async fn touch(&self, tokens: &[String], now: Millis) -> Result<()> {
        for token in tokens {
            if let Ok((room, seq)) = self.locate(token) {
                lock(&room).touch(seq, now);
            }
        }
        Ok(())
    }

    async fn rooms(&self) -> Result<Vec<Ulid>> {
        Ok(self
            .rooms
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .copied()
            .collect())
    }

    async fn tick(&self, event: Ulid, now: Millis) -> Result<TickOutcome> {
        let Some(room) = self.room(event) else {
            return Ok(TickOutcome::default());
        };
        let closes_at = lock(&room).config.closes_at;
        if now >= closes_at {
            self.rooms
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&event);
            return Ok(TickOutcome::default());
        }
        let mut room = lock(&room);
        room.open_if_due(now);
        room.expire_passes(now);
        let abandoned = room.sweep_idle(now, self.timings.idle_ms());
        let admitted = room.admit(now, &self.signer);
        if room.opened
            && room.state == RoomState::Active
            && room.waiting == 0
            && now.saturating_sub(room.busy_at) >= self.timings.quiet_ms()
        {
            room.state = RoomState::Inactive;
        }
        Ok(TickOutcome {
            admitted,
            abandoned,
            waiting: room.stats().waiting,
        })
    }

    async fn requires_pass(&self, config: &RoomConfig, now: Millis) -> Result<bool> {
        if now < config.opens_at || now >= config.closes_at {
            return Ok(false);
        }
        Ok(match self.room(config.event) {
            Some(room) => lock(&room).state.gates_holds(),
            None => true,
        })
    }

    async fn check_pass(&self, pass: &str, event: Ulid, user: Ulid, now: Millis) -> Result<()> {
        let claims = self
            .signer
            .verify_pass(pass, event, user, now)
            .map_err(WaitroomError::Pass)?;
        let revoked = WaitroomError::Pass(PassRefusal::Revoked);
        let room = self.room(event).ok_or(revoked.clone())?;
        let room = lock(&room);
        let slot = usize::try_from(claims.seq)
            .ok()
            .and_then(|seq| room.slots.get(seq))
            .ok_or(revoked.clone())?;
        if slot.state == SlotState::Admitted && slot.expires_at == claims.expires_at {
            Ok(())
        } else {
            Err(revoked)
        }
    }

    async fn control(
        &self,
        config: &RoomConfig,
        action: Control,
        now: Millis,
    ) -> Result<RoomStats> {
        let room = self.room_or_create(config);
        let mut room = lock(&room);
        room.configure(config);
        room.open_if_due(now);
        room.state = match action {
            Control::Pause => RoomState::Paused,
            Control::Resume => {
                // Credit does not build up while paused: resuming is not a burst.
                room.busy_at = now;
                room.pacer.credit = room.pacer.credit.min(1.0);
                room.pacer.credit_at = now;
                RoomState::Active
            }
            Control::End => RoomState::Ended,
        };
        Ok(room.stats())
    }

    async fn stats(&self, event: Ulid, now: Millis) -> Result<Option<RoomStats>> {
        Ok(self.room(event).map(|room| {
            let mut room = lock(&room);
            room.open_if_due(now);
            room.expire_passes(now);
            room.stats()
        }))
    }
}
