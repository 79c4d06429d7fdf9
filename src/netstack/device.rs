//! A smoltcp [`Device`] made of two packet queues, fed and drained by the
//! netstack (sans IO): `rx` holds packets the pipeline allowed towards the
//! host side, `tx` collects what smoltcp emits (to be judged by the pipeline
//! before anything reaches a peer).
//!
//! Medium is IP (no link layer, no ARP/NDP), like a TUN device. Checksums:
//! smoltcp verifies them on receive and computes them on transmit
//! (`ChecksumCapabilities::default()`): the pipeline does not promise valid
//! checksums on what it forwards.

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use std::collections::VecDeque;

/// The queue device.
#[derive(Debug)]
pub struct QueueDevice {
    pub rx: VecDeque<Vec<u8>>,
    pub tx: VecDeque<Vec<u8>>,
    mtu: usize,
}

impl QueueDevice {
    pub fn new(mtu: usize) -> Self {
        QueueDevice {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            mtu,
        }
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }

    fn receive(&mut self, _ts: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let buffer = self.rx.pop_front()?;
        Some((
            RxToken { buffer },
            TxToken {
                queue: &mut self.tx,
            },
        ))
    }

    fn transmit(&mut self, _ts: Instant) -> Option<Self::TxToken<'_>> {
        Some(TxToken {
            queue: &mut self.tx,
        })
    }
}

/// One received packet.
pub struct RxToken {
    buffer: Vec<u8>,
}

impl phy::RxToken for RxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.buffer)
    }
}

/// A slot in the transmit queue.
pub struct TxToken<'a> {
    queue: &'a mut VecDeque<Vec<u8>>,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut buffer = vec![0; len];
        let r = f(&mut buffer);
        self.queue.push_back(buffer);
        r
    }
}
