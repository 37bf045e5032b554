//! `trellis net-probe`: plain-TCP tools for the bypass tests and benchmarks. They use
//! blocking sockets and nothing of the proxy, so what they measure is the kernel path.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

#[derive(Args)]
pub struct NetProbeArgs {
    #[command(subcommand)]
    command: Probe,
}

#[derive(Subcommand)]
enum Probe {
    /// Echo every byte back; on end of stream, end ours too (half-close).
    Echo {
        #[arg(long, required = true)]
        listen: Vec<SocketAddr>,
        /// Write the bound addresses here as JSON once listening.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Send a deterministic stream on each connection, half-close, and check that the
    /// echo is byte-exact. Prints a JSON summary; exits non-zero on any difference.
    Transfer {
        #[arg(long)]
        to: SocketAddr,
        /// Bytes per connection.
        #[arg(long)]
        bytes: u64,
        /// Concurrent connections.
        #[arg(long, default_value_t = 1)]
        conns: u32,
        /// Size of each write.
        #[arg(long, default_value_t = 65536)]
        chunk: usize,
        /// Abort each connection with a reset after sending this many bytes and reading
        /// one echo back, instead of completing it.
        #[arg(long)]
        reset_after: Option<u64>,
    },
    /// Request/response latency on one connection: send --size bytes, wait for them
    /// to come back, --count times. Prints a JSON summary with percentiles.
    Pingpong {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 10000)]
        count: u32,
    },
}

pub fn run(args: NetProbeArgs) -> anyhow::Result<()> {
    match args.command {
        Probe::Echo { listen, ready_file } => echo(listen, ready_file),
        Probe::Transfer {
            to,
            bytes,
            conns,
            chunk,
            reset_after,
        } => transfer(to, bytes, conns, chunk.max(1), reset_after),
        Probe::Pingpong { to, size, count } => pingpong(to, size.max(1), count.max(1)),
    }
}

fn echo(listen: Vec<SocketAddr>, ready_file: Option<PathBuf>) -> anyhow::Result<()> {
    let mut bound = Vec::new();
    let mut listeners = Vec::new();
    for addr in listen {
        let l = TcpListener::bind(addr).map_err(|e| anyhow::anyhow!("--listen {addr}: {e}"))?;
        bound.push(l.local_addr()?.to_string());
        listeners.push(l);
    }
    if let Some(path) = ready_file {
        crate::write_atomically(&path, &serde_json::to_vec(&bound)?)?;
    }
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            std::thread::spawn(move || {
                for conn in l.incoming().flatten() {
                    std::thread::spawn(move || echo_conn(conn));
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// A blocking read that retries EAGAIN. Under the bypass, a blocking read can return
/// EAGAIN without a timeout set when it is woken with nothing in the redirected queue
/// (tcp_bpf_recvmsg); non-blocking programs (the proxy) just poll again.
fn read_some(conn: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match conn.read(buf) {
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {}
            other => return other,
        }
    }
}

fn read_full(conn: &mut TcpStream, mut buf: &mut [u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match read_some(conn, buf)? {
            0 => return Err(ErrorKind::UnexpectedEof.into()),
            n => buf = &mut buf[n..],
        }
    }
    Ok(())
}

fn echo_conn(mut conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match read_some(&mut conn, &mut buf) {
            Ok(0) => {
                let _ = conn.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if let Err(e) = conn.write_all(&buf[..n]) {
                    eprintln!("echo: write: {e}");
                    return;
                }
            }
            // A reset from the peer ends the connection; the process keeps serving.
            Err(e) => {
                eprintln!("echo: read: {e}");
                return;
            }
        }
    }
}

/// The byte stream of connection `seed`: xorshift64, cheap and never periodic within
/// the sizes tested, so a dropped, duplicated or reordered chunk cannot match.
struct Pattern(u64);

impl Pattern {
    fn new(seed: u32) -> Self {
        Pattern(0x9E37_79B9_7F4A_7C15 ^ (u64::from(seed) + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9))
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
}

#[derive(serde::Serialize, Default)]
struct TransferReport {
    conns: u32,
    bytes_each: u64,
    ok: u32,
    failed: Vec<String>,
    seconds: f64,
}

fn transfer(
    to: SocketAddr,
    bytes: u64,
    conns: u32,
    chunk: usize,
    reset_after: Option<u64>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let workers: Vec<_> = (0..conns)
        .map(|i| {
            std::thread::spawn(move || match reset_after {
                None => one_transfer(to, bytes, i, chunk),
                Some(n) => one_reset(to, n, i),
            })
        })
        .collect();
    let mut report = TransferReport {
        conns,
        bytes_each: bytes,
        ..Default::default()
    };
    for (i, w) in workers.into_iter().enumerate() {
        match w.join() {
            Ok(Ok(())) => report.ok += 1,
            Ok(Err(e)) => report.failed.push(format!("connection {i}: {e}")),
            Err(_) => report.failed.push(format!("connection {i}: panicked")),
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    println!("{}", serde_json::to_string(&report)?);
    if report.failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} of {conns} connections failed", report.failed.len())
    }
}

fn one_transfer(to: SocketAddr, bytes: u64, seed: u32, chunk: usize) -> anyhow::Result<()> {
    let conn = TcpStream::connect(to)?;
    let mut reader = conn.try_clone()?;
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut conn = conn;
        let mut pattern = Pattern::new(seed);
        let mut buf = vec![0u8; chunk];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk as u64) as usize;
            pattern.fill(&mut buf[..n]);
            conn.write_all(&buf[..n])?;
            left -= n as u64;
        }
        conn.shutdown(Shutdown::Write)
    });
    let mut expected = Pattern::new(seed);
    let mut want = vec![0u8; chunk];
    let mut got = vec![0u8; chunk];
    let mut received = 0u64;
    loop {
        let n = read_some(&mut reader, &mut got)?;
        if n == 0 {
            break;
        }
        // The echo can arrive split differently from the writes; compare in the
        // writer's framing so the pattern stays aligned.
        let mut off = 0;
        while off < n {
            let pos = (received % chunk as u64) as usize;
            if pos == 0 {
                let len = (bytes - received).min(chunk as u64) as usize;
                expected.fill(&mut want[..len]);
            }
            let take = (n - off).min(chunk - pos);
            if received + take as u64 > bytes {
                anyhow::bail!("received more than the {bytes} bytes sent");
            }
            if got[off..off + take] != want[pos..pos + take] {
                let at = (0..take)
                    .find(|&k| got[off + k] != want[pos + k])
                    .unwrap_or(0);
                anyhow::bail!("byte {} differs from what was sent", received + at as u64);
            }
            off += take;
            received += take as u64;
        }
    }
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    if received != bytes {
        anyhow::bail!("received {received} of {bytes} bytes before end of stream");
    }
    Ok(())
}

/// Sends `bytes`, reads some echo back, then aborts with RST (SO_LINGER 0).
fn one_reset(to: SocketAddr, bytes: u64, seed: u32) -> anyhow::Result<()> {
    let mut conn = TcpStream::connect(to)?;
    let mut buf = vec![0u8; bytes.max(1) as usize];
    Pattern::new(seed).fill(&mut buf);
    conn.write_all(&buf)?;
    let mut first = [0u8; 1];
    read_full(&mut conn, &mut first)?;
    if first[0] != buf[0] {
        anyhow::bail!("first echoed byte differs");
    }
    socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO))?;
    drop(conn);
    Ok(())
}

#[derive(serde::Serialize)]
struct PingpongReport {
    size: usize,
    count: u32,
    per_second: f64,
    mean_us: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
}

fn pingpong(to: SocketAddr, size: usize, count: u32) -> anyhow::Result<()> {
    let mut conn = TcpStream::connect(to)?;
    conn.set_nodelay(true)?;
    let out = vec![0x5au8; size];
    let mut back = vec![0u8; size];
    let mut samples = Vec::with_capacity(count as usize);
    let start = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        conn.write_all(&out)?;
        read_full(&mut conn, &mut back)?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let total = start.elapsed().as_secs_f64();
    if back != out {
        anyhow::bail!("echo differs from what was sent");
    }
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    let report = PingpongReport {
        size,
        count,
        per_second: f64::from(count) / total,
        mean_us: samples.iter().sum::<f64>() / samples.len() as f64,
        p50_us: pct(0.50),
        p90_us: pct(0.90),
        p99_us: pct(0.99),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
