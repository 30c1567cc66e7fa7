//! A raw RESP client for traffic the `redis` crate is too heavy or too polite for: pipelines
//! of pre-encoded commands (encoded once, before timing, so the client's own cost stays small
//! and equal for corral and its baselines), thousands of sockets (one fd and a small buffer
//! each), and replies read while a writer thread is still sending. Shared by the integration
//! tests and the benchmark (`scripts/benchmark/`).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One reply.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// Appends one command, RESP-encoded, to `buf`.
pub fn encode(buf: &mut Vec<u8>, args: &[&[u8]]) {
    buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        buf.extend_from_slice(a);
        buf.extend_from_slice(b"\r\n");
    }
}

/// A connection: writes go straight to the socket, replies are read through a buffer.
pub struct Conn {
    reader: BufReader<TcpStream>,
    line: Vec<u8>,
}

impl Conn {
    /// Connects to 127.0.0.1:`port`; `buffer` is the read buffer's size.
    pub fn connect(port: u16, buffer: usize) -> io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn {
            reader: BufReader::with_capacity(buffer, stream),
            line: Vec::new(),
        })
    }

    pub fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        self.reader.get_ref().set_read_timeout(Some(t))
    }

    /// A second handle on the socket, to send from another thread while this one reads.
    pub fn writer(&self) -> io::Result<TcpStream> {
        self.reader.get_ref().try_clone()
    }

    /// Sends already-encoded commands.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        // The BufReader buffers reads only, so writing to its stream is safe.
        self.reader.get_mut().write_all(bytes)
    }

    /// Encodes and sends one command (its reply is read later with [`Conn::read`]).
    pub fn send(&mut self, args: &[&[u8]]) -> io::Result<()> {
        let mut buf = Vec::new();
        encode(&mut buf, args);
        self.send_raw(&buf)
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        self.send(args)?;
        self.read()
    }

    /// Reads the next reply.
    pub fn read(&mut self) -> io::Result<Reply> {
        self.line.clear();
        self.reader.read_until(b'\n', &mut self.line)?;
        if self.line.len() < 3 || !self.line.ends_with(b"\r\n") {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed mid-reply",
            ));
        }
        let kind = self.line[0];
        let body = String::from_utf8_lossy(&self.line[1..self.line.len() - 2]).into_owned();
        let int = |s: &str| {
            s.parse::<i64>().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, format!("bad integer {s:?}"))
            })
        };
        Ok(match kind {
            b'+' => Reply::Status(body),
            b'-' => Reply::Error(body),
            b':' => Reply::Int(int(&body)?),
            b'$' => match int(&body)? {
                n if n < 0 => Reply::Bulk(None),
                n => {
                    let mut data = vec![0; n as usize + 2];
                    self.reader.read_exact(&mut data)?;
                    data.truncate(n as usize);
                    Reply::Bulk(Some(data))
                }
            },
            b'*' => match int(&body)? {
                n if n < 0 => Reply::Array(None),
                n => Reply::Array(Some(
                    (0..n).map(|_| self.read()).collect::<io::Result<_>>()?,
                )),
            },
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown RESP type byte {:?}", other as char),
                ))
            }
        })
    }
}
