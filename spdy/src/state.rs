//! The state one session shares between its handles and its two tasks,
//! and every transition of it. One mutex guards it all; no `.await` and no
//! I/O ever happens under it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::{oneshot, watch};
use tokio::task::AbortHandle;

use crate::error::Error;
use crate::frame::{Frame, FrameError, GoAwayStatus, MAX_STREAM_ID, RstStatus, kind};
use crate::headers::Headers;
use crate::session::Role;

/// Bytes a stream buffers from the peer before the session stops reading
/// the connection (the only backpressure spdystream peers understand).
pub(crate) const RECV_BUFFER: usize = 128 * 1024;
/// Bytes a stream buffers for sending before `poll_write` waits.
pub(crate) const SEND_BUFFER: usize = 64 * 1024;
/// The largest DATA payload we send; what Go's `io.Copy` writes per frame.
pub const MAX_DATA_FRAME: usize = 32 * 1024;
/// Data bytes the writer takes per round before flushing.
pub(crate) const WRITE_BATCH: usize = 256 * 1024;
/// Control frames queued for the writer before the reader waits (a peer
/// flooding PINGs cannot grow the queue).
pub(crate) const CTRL_QUEUE_LIMIT: usize = 256;
/// Streams the peer may have open at once; more are refused.
pub(crate) const MAX_PEER_STREAMS: usize = 1024;
/// Consumed bytes that trigger a WINDOW_UPDATE (half the SPDY/3 default
/// window of 64 KiB), per stream and for the session.
pub(crate) const WINDOW_UPDATE_THRESHOLD: u32 = 32 * 1024;

/// How a stream was reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reset {
    /// We sent RST_STREAM.
    Local,
    /// The peer sent RST_STREAM.
    Peer(RstStatus),
    /// The peer's GOAWAY left the stream unprocessed.
    GoneAway,
}

/// One stream's state.
pub(crate) struct Slot {
    /// We opened it.
    local: bool,
    /// For a stream we opened: who waits for SYN_REPLY.
    opener: Option<oneshot::Sender<Result<(), Error>>>,
    /// For a stream the peer opened, until it is accepted.
    pending_headers: Option<Headers>,

    recv: BytesMut,
    remote_fin: bool,
    reset: Option<Reset>,
    /// A handle still reads (or the stream waits to be accepted or opened).
    read_open: bool,
    read_waker: Option<Waker>,
    /// Bytes consumed since the last WINDOW_UPDATE.
    unacked: u32,

    send: BytesMut,
    fin_queued: bool,
    fin_sent: bool,
    /// A handle still writes (or the stream waits to be accepted or opened).
    write_open: bool,
    write_waker: Option<Waker>,
    /// In the writer's ready queue.
    scheduled: bool,
}

impl Slot {
    fn new(local: bool) -> Slot {
        Slot {
            local,
            opener: None,
            pending_headers: None,
            recv: BytesMut::new(),
            remote_fin: false,
            reset: None,
            read_open: true,
            read_waker: None,
            unacked: 0,
            send: BytesMut::new(),
            fin_queued: false,
            fin_sent: false,
            write_open: true,
            write_waker: None,
            scheduled: false,
        }
    }

    /// Both directions are over.
    fn done(&self) -> bool {
        self.reset.is_some() || (self.remote_fin && self.fin_sent)
    }

    fn wake_all(&mut self) {
        wake(&mut self.read_waker);
        wake(&mut self.write_waker);
    }
}

fn wake(w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        w.wake();
    }
}

fn set_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// Where the session is in its life.
pub(crate) enum Phase {
    Open,
    /// Ending: the writer sends what is left (data too when `drain`), then
    /// GOAWAY with `status`, then shuts the connection down.
    Closing {
        status: GoAwayStatus,
        drain: bool,
        reason: Error,
    },
    /// Over; `reason` is what waiters are told.
    Ended(Error),
}

/// Something for the writer to send.
pub(crate) enum Out {
    Control(Frame),
    Data { stream_id: u32, fin: bool, data: Bytes },
}

/// What the writer does after sending a batch.
pub(crate) enum Step {
    /// Wait for more.
    More,
    /// The batch ended with GOAWAY: shut down and end the session.
    Finish,
    /// The session is over already: shut down and stop.
    Ended,
}

/// Counters for diagnostics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Streams the session still tracks.
    pub streams: usize,
    /// Bytes received and not yet read, over all streams.
    pub recv_buffered: usize,
    /// Bytes written and not yet handed to the connection, over all streams.
    pub send_buffered: usize,
    /// Control frames waiting for the writer.
    pub control_queued: usize,
}

pub(crate) struct State {
    role: Role,
    phase: Phase,
    next_stream_id: u32,
    /// The highest stream id the peer opened (for GOAWAY).
    last_peer_id: u32,
    streams: HashMap<u32, Slot>,
    ctrl: VecDeque<Frame>,
    /// Answers to the peer's PINGs and our own PINGs: sent before `ctrl`.
    urgent: VecDeque<Frame>,
    ready: VecDeque<u32>,
    writer_waker: Option<Waker>,
    /// The reader task, waiting for buffer or queue room.
    reader_waker: Option<Waker>,
    accept: VecDeque<u32>,
    accept_waker: Option<Waker>,
    incoming_alive: bool,
    pings: HashMap<u32, oneshot::Sender<()>>,
    next_ping_id: u32,
    goaway_received: Option<(u32, GoAwayStatus)>,
    session_unacked: u32,
    tasks: Vec<AbortHandle>,
}

/// The session's shared core.
pub(crate) struct Inner {
    state: Mutex<State>,
    ended: watch::Sender<bool>,
    /// Touched for every frame read or written.
    pub(crate) activity: crate::idle::IdleClock,
}

/// What `poll_data_room` allows for the bytes at hand.
pub(crate) enum Room {
    /// Deliver up to this many bytes.
    Deliver(usize),
    /// Nobody reads the stream: drop the bytes.
    Discard,
}

impl Inner {
    pub(crate) fn new(role: Role) -> Inner {
        let (first_stream, first_ping) = match role {
            Role::Client => (1, 1),
            Role::Server => (2, 2),
        };
        Inner {
            state: Mutex::new(State {
                role,
                phase: Phase::Open,
                next_stream_id: first_stream,
                last_peer_id: 0,
                streams: HashMap::new(),
                ctrl: VecDeque::new(),
                urgent: VecDeque::new(),
                ready: VecDeque::new(),
                writer_waker: None,
                reader_waker: None,
                accept: VecDeque::new(),
                accept_waker: None,
                incoming_alive: true,
                pings: HashMap::new(),
                next_ping_id: first_ping,
                goaway_received: None,
                session_unacked: 0,
                tasks: Vec::new(),
            }),
            ended: watch::channel(false).0,
            activity: crate::idle::IdleClock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn add_task(&self, task: AbortHandle) {
        let mut st = self.lock();
        if matches!(st.phase, Phase::Ended(_)) {
            task.abort();
        } else {
            st.tasks.push(task);
        }
    }

    pub(crate) fn ended_receiver(&self) -> watch::Receiver<bool> {
        self.ended.subscribe()
    }

    /// Why the session ended, once it has.
    pub(crate) fn end_reason(&self) -> Option<Error> {
        match &self.lock().phase {
            Phase::Ended(e) => Some(e.clone()),
            _ => None,
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        let st = self.lock();
        Stats {
            streams: st.streams.len(),
            recv_buffered: st.streams.values().map(|s| s.recv.len()).sum(),
            send_buffered: st.streams.values().map(|s| s.send.len()).sum(),
            control_queued: st.ctrl.len() + st.urgent.len(),
        }
    }

    // ---- the session API ----

    /// Queues SYN_STREAM for a new stream and returns its id and the
    /// receiver of the peer's answer.
    pub(crate) fn open(&self, headers: Headers) -> Result<(u32, oneshot::Receiver<Result<(), Error>>), Error> {
        let mut st = self.lock();
        st.usable()?;
        if let Some((_, status)) = st.goaway_received {
            return Err(Error::GoingAway(status));
        }
        let id = st.next_stream_id;
        if id == 0 || id > MAX_STREAM_ID {
            return Err(Error::StreamIdsExhausted);
        }
        st.next_stream_id = id.checked_add(2).unwrap_or(0);
        let (tx, rx) = oneshot::channel();
        let mut slot = Slot::new(true);
        slot.opener = Some(tx);
        st.streams.insert(id, slot);
        // Queued under the same lock as the id was taken: ids reach the wire
        // in increasing order, as the protocol demands.
        st.push_ctrl(Frame::SynStream {
            stream_id: id,
            associated_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers,
        });
        Ok((id, rx))
    }

    /// An `open` whose caller gave up before SYN_REPLY: cancel the stream.
    pub(crate) fn abandon_open(&self, id: u32) {
        let mut st = self.lock();
        if let Some(slot) = st.streams.get_mut(&id) {
            slot.opener = None;
            slot.read_open = false;
            slot.write_open = false;
        }
        st.reset_local(id, RstStatus::CANCEL);
        st.reap(id);
    }

    pub(crate) fn ping(&self) -> Result<oneshot::Receiver<()>, Error> {
        let mut st = self.lock();
        st.usable()?;
        let id = st.next_ping_id;
        st.next_ping_id = if id > 0x7fff_fffe { id - 0x7fff_fffe } else { id + 2 };
        let (tx, rx) = oneshot::channel();
        st.pings.insert(id, tx);
        st.push_urgent(Frame::Ping { id });
        Ok(rx)
    }

    /// Starts an orderly end: queued data, then GOAWAY, then shutdown.
    pub(crate) fn close(&self, status: GoAwayStatus, drain: bool, reason: Error) {
        self.lock().begin_close(status, drain, reason);
    }

    /// Ends the session now and tells everyone.
    pub(crate) fn end(&self, reason: Error) {
        let mut st = self.lock();
        if matches!(st.phase, Phase::Ended(_)) {
            return;
        }
        let reason = match std::mem::replace(&mut st.phase, Phase::Open) {
            Phase::Closing { reason, .. } => reason,
            _ => reason,
        };
        tracing::debug!(%reason, "spdy session ended");
        for slot in st.streams.values_mut() {
            if let Some(tx) = slot.opener.take() {
                let _ = tx.send(Err(reason.clone()));
            }
            slot.send.clear();
            slot.wake_all();
        }
        st.streams.retain(|_, s| s.read_open || s.write_open);
        st.accept.clear();
        st.pings.clear();
        st.ctrl.clear();
        st.urgent.clear();
        st.ready.clear();
        wake(&mut st.writer_waker);
        wake(&mut st.reader_waker);
        wake(&mut st.accept_waker);
        for task in st.tasks.drain(..) {
            task.abort();
        }
        st.phase = Phase::Ended(reason);
        drop(st);
        self.ended.send_replace(true);
    }

    // ---- the Incoming API ----

    pub(crate) fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Option<(u32, Headers)>> {
        let mut st = self.lock();
        if matches!(st.phase, Phase::Ended(_)) {
            return Poll::Ready(None);
        }
        while let Some(id) = st.accept.pop_front() {
            if let Some(slot) = st.streams.get_mut(&id) {
                let headers = slot.pending_headers.take().unwrap_or_default();
                return Poll::Ready(Some((id, headers)));
            }
        }
        if matches!(st.phase, Phase::Closing { .. }) {
            return Poll::Ready(None);
        }
        set_waker(&mut st.accept_waker, cx);
        Poll::Pending
    }

    /// The `Incoming` is gone: refuse what waits and what comes.
    pub(crate) fn drop_incoming(&self) {
        let mut st = self.lock();
        st.incoming_alive = false;
        let queued: Vec<u32> = st.accept.drain(..).collect();
        for id in queued {
            if let Some(slot) = st.streams.get_mut(&id) {
                slot.read_open = false;
                slot.write_open = false;
            }
            st.reset_local(id, RstStatus::REFUSED_STREAM);
            st.reap(id);
        }
    }

    // ---- the Stream API ----

    pub(crate) fn poll_read(
        &self,
        id: u32,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut guard = self.lock();
        let st = &mut *guard;
        let ended = matches!(st.phase, Phase::Ended(_));
        let Some(slot) = st.streams.get_mut(&id) else { return Poll::Ready(Ok(())) };
        if !slot.recv.is_empty() {
            let n = buf.remaining().min(slot.recv.len());
            buf.put_slice(&slot.recv[..n]);
            slot.recv.advance(n);
            let n32 = u32::try_from(n).unwrap_or(u32::MAX);
            if !slot.remote_fin && slot.reset.is_none() && !ended {
                slot.unacked = slot.unacked.saturating_add(n32);
                if slot.unacked >= WINDOW_UPDATE_THRESHOLD {
                    let delta = std::mem::take(&mut slot.unacked);
                    st.push_ctrl(Frame::WindowUpdate { stream_id: id, delta });
                }
            }
            st.consumed(n32);
            wake(&mut st.reader_waker);
            return Poll::Ready(Ok(()));
        }
        if slot.remote_fin || slot.reset.is_some() {
            return Poll::Ready(Ok(()));
        }
        if ended {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                format!("spdy stream {id}: session ended before the peer finished the stream"),
            )));
        }
        set_waker(&mut slot.read_waker, cx);
        Poll::Pending
    }

    pub(crate) fn poll_write(&self, id: u32, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let mut guard = self.lock();
        let st = &mut *guard;
        if !matches!(st.phase, Phase::Open) {
            return Poll::Ready(Err(broken_pipe(id, "the session is closed")));
        }
        let Some(slot) = st.streams.get_mut(&id) else {
            return Poll::Ready(Err(broken_pipe(id, "the stream is closed")));
        };
        match slot.reset {
            Some(Reset::Peer(status)) => {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    format!("spdy stream {id}: reset by peer ({status})"),
                )));
            }
            Some(_) => return Poll::Ready(Err(broken_pipe(id, "the stream was reset"))),
            None => {}
        }
        if slot.fin_queued {
            return Poll::Ready(Err(broken_pipe(id, "write after shutdown")));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let room = SEND_BUFFER.saturating_sub(slot.send.len());
        if room == 0 {
            set_waker(&mut slot.write_waker, cx);
            return Poll::Pending;
        }
        let n = room.min(data.len());
        slot.send.extend_from_slice(&data[..n]);
        st.schedule(id);
        Poll::Ready(Ok(n))
    }

    pub(crate) fn poll_flush(&self, id: u32, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut st = self.lock();
        let ended = matches!(st.phase, Phase::Ended(_));
        let Some(slot) = st.streams.get_mut(&id) else { return Poll::Ready(Ok(())) };
        if slot.send.is_empty() || slot.reset.is_some() {
            return Poll::Ready(Ok(()));
        }
        if ended {
            return Poll::Ready(Err(broken_pipe(id, "the session ended with data unsent")));
        }
        set_waker(&mut slot.write_waker, cx);
        Poll::Pending
    }

    pub(crate) fn poll_shutdown(&self, id: u32, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut st = self.lock();
        let ended = matches!(st.phase, Phase::Ended(_));
        let Some(slot) = st.streams.get_mut(&id) else { return Poll::Ready(Ok(())) };
        if slot.fin_sent || slot.reset.is_some() {
            return Poll::Ready(Ok(()));
        }
        if ended {
            return Poll::Ready(Err(broken_pipe(id, "the session ended before FIN was sent")));
        }
        set_waker(&mut slot.write_waker, cx);
        if !slot.fin_queued {
            slot.fin_queued = true;
            st.schedule(id);
        }
        Poll::Pending
    }

    pub(crate) fn reset(&self, id: u32) {
        let mut st = self.lock();
        st.reset_local(id, RstStatus::CANCEL);
        st.reap(id);
    }

    /// The last reader of the stream is gone: drop what it would have read.
    pub(crate) fn drop_read(&self, id: u32) {
        let mut guard = self.lock();
        let st = &mut *guard;
        if let Some(slot) = st.streams.get_mut(&id) {
            slot.read_open = false;
            let n = u32::try_from(slot.recv.len()).unwrap_or(u32::MAX);
            slot.recv = BytesMut::new();
            st.consumed(n);
            wake(&mut st.reader_waker);
        }
        st.reap(id);
    }

    /// The last writer of the stream is gone: half-close after what it wrote.
    pub(crate) fn drop_write(&self, id: u32) {
        let mut guard = self.lock();
        let st = &mut *guard;
        let live = !matches!(st.phase, Phase::Ended(_));
        if let Some(slot) = st.streams.get_mut(&id) {
            slot.write_open = false;
            if live && !slot.fin_queued && slot.reset.is_none() {
                slot.fin_queued = true;
                st.schedule(id);
            }
        }
        st.reap(id);
    }

    // ---- the reader task ----

    /// Waits until the control queue has room (our replies to the peer's
    /// control frames are bounded).
    pub(crate) fn poll_control_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.lock();
        if st.ctrl.len() + st.urgent.len() < CTRL_QUEUE_LIMIT
            || !matches!(st.phase, Phase::Open | Phase::Closing { .. })
        {
            return Poll::Ready(());
        }
        set_waker(&mut st.reader_waker, cx);
        Poll::Pending
    }

    /// Checks a DATA frame's stream as the frame begins.
    pub(crate) fn on_data_start(&self, id: u32, len: u32, fin: bool) {
        let mut st = self.lock();
        let Some(slot) = st.streams.get_mut(&id) else {
            tracing::debug!(stream = id, len, fin, "spdy: DATA on an unknown stream, ignored");
            return;
        };
        if slot.remote_fin && slot.reset.is_none() && (len > 0 || fin) {
            tracing::debug!(stream = id, "spdy: DATA after FIN");
            st.reset_local(id, RstStatus::STREAM_ALREADY_CLOSED);
            st.reap(id);
        }
    }

    /// How many of the bytes at hand stream `id` takes now; `Pending`
    /// while its buffer is full, which stops the reader and so the peer.
    pub(crate) fn poll_data_room(&self, id: u32, cx: &mut Context<'_>) -> Poll<Room> {
        let mut guard = self.lock();
        let st = &mut *guard;
        if matches!(st.phase, Phase::Ended(_)) {
            return Poll::Ready(Room::Discard);
        }
        let Some(slot) = st.streams.get_mut(&id) else { return Poll::Ready(Room::Discard) };
        if slot.reset.is_some() || slot.remote_fin || !slot.read_open {
            return Poll::Ready(Room::Discard);
        }
        let room = RECV_BUFFER.saturating_sub(slot.recv.len());
        if room == 0 {
            set_waker(&mut st.reader_waker, cx);
            return Poll::Pending;
        }
        Poll::Ready(Room::Deliver(room))
    }

    pub(crate) fn deliver(&self, id: u32, data: &[u8]) {
        let mut guard = self.lock();
        let st = &mut *guard;
        match st.streams.get_mut(&id) {
            Some(slot) if slot.read_open && slot.reset.is_none() && !slot.remote_fin => {
                slot.recv.extend_from_slice(data);
                wake(&mut slot.read_waker);
            }
            _ => st.consumed(u32::try_from(data.len()).unwrap_or(u32::MAX)),
        }
    }

    pub(crate) fn discard(&self, n: usize) {
        self.lock().consumed(u32::try_from(n).unwrap_or(u32::MAX));
    }

    pub(crate) fn on_data_fin(&self, id: u32) {
        let mut st = self.lock();
        st.remote_fin(id);
    }

    pub(crate) fn on_control(&self, frame: Frame) {
        self.lock().on_control(frame);
    }

    /// A frame whose fault is confined to one stream: reset that stream.
    pub(crate) fn on_stream_error(&self, e: &FrameError) {
        let mut st = self.lock();
        let id = e.stream_id;
        let status = e.stream_status.unwrap_or(RstStatus::PROTOCOL_ERROR);
        tracing::debug!(error = %e, "spdy: resetting stream");
        if e.frame == kind::name(kind::SYN_STREAM) {
            if id % 2 == st.peer_parity() && id > st.last_peer_id && !st.streams.contains_key(&id) {
                st.last_peer_id = id;
            }
            if !st.streams.contains_key(&id) {
                st.push_ctrl(Frame::RstStream { stream_id: id, status });
            }
            return;
        }
        if let Some(slot) = st.streams.get_mut(&id)
            && let Some(tx) = slot.opener.take()
        {
            let _ = tx.send(Err(Error::StreamProtocol { stream_id: id, reason: e.to_string() }));
        }
        st.reset_local(id, status);
        st.reap(id);
    }

    // ---- the writer task ----

    pub(crate) fn poll_batch(&self, cx: &mut Context<'_>, batch: &mut Vec<Out>) -> Poll<Step> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let drain = match &st.phase {
            Phase::Ended(_) => return Poll::Ready(Step::Ended),
            Phase::Open => true,
            Phase::Closing { drain, .. } => *drain,
        };
        if !st.ctrl.is_empty() || !st.urgent.is_empty() {
            batch.extend(st.urgent.drain(..).map(Out::Control));
            batch.extend(st.ctrl.drain(..).map(Out::Control));
            wake(&mut st.reader_waker);
        }
        if drain {
            let mut budget = WRITE_BATCH;
            let mut finished = Vec::new();
            while budget > 0 {
                let Some(id) = st.ready.pop_front() else { break };
                let Some(slot) = st.streams.get_mut(&id) else { continue };
                slot.scheduled = false;
                if slot.reset.is_some() || slot.fin_sent {
                    slot.send.clear();
                    continue;
                }
                let n = slot.send.len().min(MAX_DATA_FRAME);
                let data = slot.send.split_to(n).freeze();
                let fin = slot.fin_queued && slot.send.is_empty();
                if n == 0 && !fin {
                    continue;
                }
                if fin {
                    slot.fin_sent = true;
                    finished.push(id);
                }
                budget = budget.saturating_sub(n.max(1));
                if !slot.send.is_empty() {
                    slot.scheduled = true;
                    st.ready.push_back(id);
                }
                wake(&mut slot.write_waker);
                batch.push(Out::Data { stream_id: id, fin, data });
            }
            for id in finished {
                st.reap(id);
            }
        }
        if !batch.is_empty() {
            return Poll::Ready(Step::More);
        }
        if let Phase::Closing { status, .. } = st.phase {
            batch.push(Out::Control(Frame::GoAway { last_good_stream_id: st.last_peer_id, status }));
            return Poll::Ready(Step::Finish);
        }
        set_waker(&mut st.writer_waker, cx);
        Poll::Pending
    }
}

fn broken_pipe(id: u32, why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, format!("spdy stream {id}: {why}"))
}

impl State {
    /// Open for new work (streams, pings)?
    fn usable(&self) -> Result<(), Error> {
        match &self.phase {
            Phase::Open => Ok(()),
            Phase::Closing { reason, .. } | Phase::Ended(reason) => Err(reason.clone()),
        }
    }

    fn peer_parity(&self) -> u32 {
        match self.role {
            Role::Client => 0,
            Role::Server => 1,
        }
    }

    fn push_ctrl(&mut self, frame: Frame) {
        if matches!(self.phase, Phase::Ended(_)) {
            return;
        }
        self.ctrl.push_back(frame);
        wake(&mut self.writer_waker);
    }

    fn push_urgent(&mut self, frame: Frame) {
        if matches!(self.phase, Phase::Ended(_)) {
            return;
        }
        self.urgent.push_back(frame);
        wake(&mut self.writer_waker);
    }

    fn schedule(&mut self, id: u32) {
        if let Some(slot) = self.streams.get_mut(&id)
            && !slot.scheduled
        {
            slot.scheduled = true;
            self.ready.push_back(id);
            wake(&mut self.writer_waker);
        }
    }

    /// Bytes left the session's receive side (read or dropped): the
    /// session-level window of a SPDY/3.1 peer that keeps one.
    fn consumed(&mut self, n: u32) {
        if n == 0 || !matches!(self.phase, Phase::Open) {
            return;
        }
        self.session_unacked = self.session_unacked.saturating_add(n);
        if self.session_unacked >= WINDOW_UPDATE_THRESHOLD {
            let delta = std::mem::take(&mut self.session_unacked).min(0x7fff_ffff);
            self.push_ctrl(Frame::WindowUpdate { stream_id: 0, delta });
        }
    }

    fn begin_close(&mut self, status: GoAwayStatus, drain: bool, reason: Error) {
        if !matches!(self.phase, Phase::Open) {
            return;
        }
        tracing::debug!(%status, %reason, "spdy session closing");
        self.phase = Phase::Closing { status, drain, reason };
        for slot in self.streams.values_mut() {
            // Writers fail from now on; readers keep what has arrived.
            wake(&mut slot.write_waker);
        }
        wake(&mut self.writer_waker);
        wake(&mut self.accept_waker);
    }

    /// Sends RST_STREAM and forgets the stream's buffers.
    fn reset_local(&mut self, id: u32, status: RstStatus) {
        let Some(slot) = self.streams.get_mut(&id) else { return };
        if slot.reset.is_some() || slot.done() {
            return;
        }
        slot.reset = Some(Reset::Local);
        let n = u32::try_from(slot.recv.len()).unwrap_or(u32::MAX);
        slot.recv = BytesMut::new();
        slot.send = BytesMut::new();
        if let Some(tx) = slot.opener.take() {
            let _ = tx.send(Err(Error::Closed));
        }
        slot.wake_all();
        self.consumed(n);
        wake(&mut self.reader_waker);
        self.push_ctrl(Frame::RstStream { stream_id: id, status });
    }

    fn remote_fin(&mut self, id: u32) {
        if let Some(slot) = self.streams.get_mut(&id)
            && !slot.remote_fin
        {
            slot.remote_fin = true;
            wake(&mut slot.read_waker);
        }
        self.reap(id);
    }

    /// Forgets a stream once it is over and nobody holds it, and ends the
    /// session when the peer went away and no stream is left.
    fn reap(&mut self, id: u32) {
        if let Some(slot) = self.streams.get(&id)
            && slot.done()
            && !slot.read_open
            && !slot.write_open
            && slot.opener.is_none()
        {
            self.streams.remove(&id);
        }
        self.check_idle();
    }

    fn check_idle(&mut self) {
        if self.goaway_received.is_some() && matches!(self.phase, Phase::Open) && self.streams.values().all(Slot::done)
        {
            let status = self.goaway_received.map(|(_, s)| s).unwrap_or(GoAwayStatus::OK);
            self.begin_close(GoAwayStatus::OK, true, Error::GoingAway(status));
        }
    }

    fn on_control(&mut self, frame: Frame) {
        match frame {
            Frame::SynStream { stream_id, fin, unidirectional, headers, .. } => {
                self.on_syn_stream(stream_id, fin, unidirectional, headers);
            }
            Frame::SynReply { stream_id, fin, .. } => {
                match self.streams.get_mut(&stream_id) {
                    Some(slot) if slot.local => match slot.opener.take() {
                        Some(tx) => {
                            let _ = tx.send(Ok(()));
                        }
                        None => tracing::debug!(stream = stream_id, "spdy: second SYN_REPLY ignored"),
                    },
                    _ => tracing::debug!(stream = stream_id, "spdy: SYN_REPLY for no stream of ours, ignored"),
                }
                if fin {
                    self.remote_fin(stream_id);
                }
            }
            Frame::RstStream { stream_id, status } => {
                if let Some(slot) = self.streams.get_mut(&stream_id) {
                    if slot.reset.is_none() {
                        tracing::debug!(stream = stream_id, %status, "spdy: stream reset by peer");
                        slot.reset = Some(Reset::Peer(status));
                        slot.send = BytesMut::new();
                        if let Some(tx) = slot.opener.take() {
                            let _ = tx.send(Err(Error::Reset { stream_id, status }));
                        }
                        slot.wake_all();
                    }
                    self.reap(stream_id);
                }
            }
            Frame::Settings { entries, .. } => {
                tracing::debug!(?entries, "spdy: SETTINGS received, ignored (no flow control, like spdystream)");
            }
            Frame::Ping { id } => {
                if id == 0 {
                    return;
                }
                if id % 2 == self.peer_parity() {
                    // The peer's ping: answer at once, ahead of data.
                    self.push_urgent(Frame::Ping { id });
                } else if let Some(tx) = self.pings.remove(&id) {
                    let _ = tx.send(());
                }
            }
            Frame::GoAway { last_good_stream_id, status } => {
                tracing::debug!(last_good_stream_id, %status, "spdy: GOAWAY received");
                if self.goaway_received.is_none() {
                    self.goaway_received = Some((last_good_stream_id, status));
                }
                let lost: Vec<u32> = self
                    .streams
                    .iter()
                    .filter(|(id, s)| s.local && **id > last_good_stream_id && !s.done())
                    .map(|(id, _)| *id)
                    .collect();
                for id in lost {
                    if let Some(slot) = self.streams.get_mut(&id) {
                        slot.reset = Some(Reset::GoneAway);
                        slot.send = BytesMut::new();
                        if let Some(tx) = slot.opener.take() {
                            let _ = tx.send(Err(Error::GoneAway { stream_id: id, last_good_stream_id }));
                        }
                        slot.wake_all();
                    }
                    self.reap(id);
                }
                self.check_idle();
            }
            Frame::Headers { stream_id, fin, .. } => {
                if fin && self.streams.contains_key(&stream_id) {
                    self.remote_fin(stream_id);
                }
            }
            Frame::WindowUpdate { stream_id, delta } => {
                tracing::trace!(stream = stream_id, delta, "spdy: WINDOW_UPDATE received, ignored");
            }
            Frame::Data { .. } => {}
        }
    }

    fn on_syn_stream(&mut self, id: u32, fin: bool, unidirectional: bool, headers: Headers) {
        if !matches!(self.phase, Phase::Open) {
            // After our GOAWAY new streams are ignored (spdystream does the same).
            tracing::debug!(stream = id, "spdy: SYN_STREAM while closing, ignored");
            return;
        }
        if id % 2 != self.peer_parity() || id <= self.last_peer_id || self.streams.contains_key(&id) {
            tracing::debug!(stream = id, last = self.last_peer_id, "spdy: SYN_STREAM with an invalid stream id");
            self.push_ctrl(Frame::RstStream { stream_id: id, status: RstStatus::PROTOCOL_ERROR });
            return;
        }
        self.last_peer_id = id;
        let active = self.streams.values().filter(|s| !s.local && !s.done()).count();
        if !self.incoming_alive || active >= MAX_PEER_STREAMS {
            tracing::debug!(stream = id, active, "spdy: stream refused");
            self.push_ctrl(Frame::RstStream { stream_id: id, status: RstStatus::REFUSED_STREAM });
            return;
        }
        let mut slot = Slot::new(false);
        slot.pending_headers = Some(headers);
        slot.remote_fin = fin;
        if unidirectional {
            slot.fin_queued = true;
            slot.fin_sent = true;
        } else {
            self.push_ctrl(Frame::SynReply { stream_id: id, fin: false, headers: Vec::new() });
        }
        self.streams.insert(id, slot);
        self.accept.push_back(id);
        wake(&mut self.accept_waker);
    }
}
