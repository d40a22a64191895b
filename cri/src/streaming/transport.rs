//! One face for the two transports a streaming session arrives on: a SPDY
//! stream per channel, or the channels multiplexed over one WebSocket
//! (Kubernetes' `channel.k8s.io` family: each message starts with its
//! channel number, as a byte, or as an ASCII digit before base64 text in
//! the `base64.` variants; from `v5.` a message `[255, n]` closes channel
//! `n`). The exec, attach and port-forward code reads [`Source`]s and
//! writes [`Sink`]s without knowing which it has.

use std::time::Duration;

use base64::Engine;
use bulkhead_spdy::IdleClock;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The largest read handed on at once.
const CHUNK: usize = 32 * 1024;
/// Messages queued towards the WebSocket writer, and per input channel.
const QUEUE: usize = 16;
/// The v5 message that closes a channel.
const CLOSE_CHANNEL: u8 = 255;

/// How channel messages are encoded on a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Binary messages: `[channel, data…]`.
    Binary,
    /// Text messages: `'0' + channel` then the data in base64.
    Base64,
}

/// Bytes from the client: a SPDY stream, or one WebSocket channel.
pub enum Source {
    Spdy(bulkhead_spdy::Stream),
    Channel(mpsc::Receiver<Vec<u8>>),
}

impl Source {
    /// The next bytes; `None` once the client closed the stream (or went away).
    pub async fn read(&mut self) -> Option<Vec<u8>> {
        match self {
            Source::Spdy(stream) => {
                let mut buf = vec![0u8; CHUNK];
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some(buf)
                    }
                }
            }
            Source::Channel(rx) => rx.recv().await,
        }
    }
}

/// Bytes to the client: a SPDY stream, or one WebSocket channel.
pub enum Sink {
    Spdy(bulkhead_spdy::Stream),
    Channel { channel: u8, codec: Codec, out: mpsc::Sender<Message> },
}

impl Sink {
    pub async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Spdy(stream) => stream.write_all(data).await,
            Sink::Channel { channel, codec, out } => {
                let message = encode(*codec, *channel, data);
                out.send(message).await.map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            }
        }
    }

    /// Ends this direction of the stream (SPDY: FIN). A WebSocket channel
    /// ends with the connection.
    pub async fn close(&mut self) {
        if let Sink::Spdy(stream) = self {
            let _ = stream.shutdown().await;
        }
    }
}

fn encode(codec: Codec, channel: u8, data: &[u8]) -> Message {
    match codec {
        Codec::Binary => {
            let mut frame = Vec::with_capacity(data.len() + 1);
            frame.push(channel);
            frame.extend_from_slice(data);
            Message::Binary(frame.into())
        }
        Codec::Base64 => {
            let mut text = String::with_capacity(data.len() * 4 / 3 + 4);
            text.push(char::from(b'0'.saturating_add(channel)));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
            Message::Text(text.into())
        }
    }
}

/// Splits one message into its channel and data.
fn decode(codec: Codec, message: Message) -> Option<(u8, Vec<u8>)> {
    match (codec, message) {
        (Codec::Binary, Message::Binary(data)) => {
            let (&channel, rest) = data.split_first()?;
            Some((channel, rest.to_vec()))
        }
        (Codec::Base64, Message::Text(text)) => {
            let (&digit, rest) = text.as_bytes().split_first()?;
            let channel = digit.checked_sub(b'0')?;
            let data = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
            Some((channel, data))
        }
        _ => None,
    }
}

/// A WebSocket carrying channels: the client's input channels as
/// [`Source`]s, and [`Sink`]s for the rest.
pub struct Channels {
    /// Per channel, its input from the client, for the channels that read.
    pub sources: Vec<Option<Source>>,
    codec: Codec,
    out: mpsc::Sender<Message>,
    gone: watch::Receiver<bool>,
}

impl Channels {
    /// Starts reading and writing `ws`. `readable[n]`: channel `n` takes
    /// input from the client. `v5`: the client may close channels. `idle`:
    /// once no message has gone either way for that long, the connection
    /// is dropped and the client counts as gone (kubelet's idle timeout).
    pub fn open<S>(
        ws: WebSocketStream<S>,
        codec: Codec,
        v5: bool,
        readable: &[bool],
        idle: Option<Duration>,
    ) -> Channels
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sink, mut stream) = ws.split();
        let (out, mut queue) = mpsc::channel::<Message>(QUEUE);
        let mut inputs: Vec<Option<mpsc::Sender<Vec<u8>>>> = Vec::new();
        let mut sources = Vec::new();
        for &reads in readable {
            if reads {
                let (tx, rx) = mpsc::channel(QUEUE);
                inputs.push(Some(tx));
                sources.push(Some(Source::Channel(rx)));
            } else {
                inputs.push(None);
                sources.push(None);
            }
        }
        let (gone_tx, gone) = watch::channel(false);
        let clock = IdleClock::new();
        let read_clock = clock.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                read_clock.touch();
                if message.is_close() {
                    break;
                }
                let Some((channel, data)) = decode(codec, message) else { continue };
                if channel == CLOSE_CHANNEL && v5 {
                    if let Some(closed) = data.first().and_then(|c| inputs.get_mut(usize::from(*c))) {
                        *closed = None;
                    }
                    continue;
                }
                let Some(input) = inputs.get_mut(usize::from(channel)) else { continue };
                if let Some(tx) = input
                    && tx.send(data).await.is_err()
                {
                    *input = None;
                }
            }
            drop(inputs);
            let _ = gone_tx.send(true);
        });
        let write_clock = clock.clone();
        let mut writer = tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                if sink.send(message).await.is_err() {
                    return;
                }
                write_clock.touch();
            }
            let close = CloseFrame { code: CloseCode::Normal, reason: "".into() };
            let _ = sink.send(Message::Close(Some(close))).await;
            let _ = sink.close().await;
        });
        if let Some(idle) = idle {
            let mut ended = gone.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = clock.idle_for(idle) => {
                        tracing::debug!(?idle, "websocket idle, closing it");
                        // Dropping both halves closes the connection; the
                        // reader's end (its sender dropped) tells the session.
                        reader.abort();
                        writer.abort();
                        return;
                    }
                    () = went(&mut ended) => {}
                }
                // The client closed its side: what is left to send is
                // bounded by the same clock, so a client that no longer
                // reads cannot hold the writer (and the socket) for ever.
                tokio::select! {
                    () = clock.idle_for(idle) => writer.abort(),
                    _ = &mut writer => {}
                }
            });
        }
        Channels { sources, codec, out, gone }
    }

    /// A sink writing to `channel`.
    pub fn sink(&self, channel: u8) -> Sink {
        Sink::Channel { channel, codec: self.codec, out: self.out.clone() }
    }

    /// Takes the input of `channel`, if it reads.
    pub fn source(&mut self, channel: u8) -> Option<Source> {
        self.sources.get_mut(usize::from(channel)).and_then(Option::take)
    }

    /// Resolves once the client has closed the WebSocket or gone away.
    pub fn gone(&self) -> watch::Receiver<bool> {
        self.gone.clone()
    }
}

/// Resolves once `gone` turns true (or its sender is gone).
pub async fn went(gone: &mut watch::Receiver<bool>) {
    let _ = gone.wait_for(|gone| *gone).await;
}

/// A terminal size, as clients send it on the resize stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Size {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Reads the stream of JSON sizes a client sends, one after another.
pub fn resizes(mut source: Source) -> mpsc::Receiver<Size> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut pending = Vec::new();
        while let Some(data) = source.read().await {
            pending.extend_from_slice(&data);
            let mut consumed = 0;
            let mut sizes = serde_json::Deserializer::from_slice(&pending).into_iter::<Size>();
            loop {
                match sizes.next() {
                    Some(Ok(size)) => {
                        consumed = sizes.byte_offset();
                        if tx.send(size).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    // Garbage: the rest of this stream cannot be trusted.
                    Some(Err(_)) => return,
                    None => {
                        consumed = pending.len();
                        break;
                    }
                }
            }
            pending.drain(..consumed);
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_their_channel() {
        let m = encode(Codec::Binary, 1, b"hi");
        assert_eq!(m, Message::Binary(vec![1, b'h', b'i'].into()));
        assert_eq!(decode(Codec::Binary, m), Some((1, b"hi".to_vec())));
        let m = encode(Codec::Base64, 2, b"foo\n");
        assert_eq!(m, Message::Text("2Zm9vCg==".into()));
        assert_eq!(decode(Codec::Base64, m), Some((2, b"foo\n".to_vec())));
        assert_eq!(decode(Codec::Binary, Message::Binary(vec![].into())), None);
        assert_eq!(decode(Codec::Base64, Message::Text("0%%%".into())), None);
        assert_eq!(decode(Codec::Binary, Message::Binary(vec![255, 0].into())), Some((255, vec![0])));
    }

    #[tokio::test]
    async fn sizes_are_read_across_reads() {
        let (tx, rx) = mpsc::channel(4);
        let mut sizes = resizes(Source::Channel(rx));
        tx.send(br#"{"Width":80,"Hei"#.to_vec()).await.unwrap();
        tx.send(br#"ght":24}{"Width":120,"Height":40}"#.to_vec()).await.unwrap();
        assert_eq!(sizes.recv().await, Some(Size { width: 80, height: 24 }));
        assert_eq!(sizes.recv().await, Some(Size { width: 120, height: 40 }));
        drop(tx);
        assert_eq!(sizes.recv().await, None);
    }
}
