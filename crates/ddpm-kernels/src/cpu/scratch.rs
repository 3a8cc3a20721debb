//! Scratch buffers kept per thread between calls: a fresh multi-megabyte allocation is a fresh
//! mapping from the OS, and faulting its pages in cost more than the GEMM that fills it.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

thread_local! {
    static FREE: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// How many idle buffers a thread keeps (a Winograd backward pass holds six).
const KEEP: usize = 6;

/// A buffer of `len` values with unspecified contents, back in the pool when dropped.
pub struct Scratch {
    buf: Vec<f32>,
    len: usize,
}

pub fn scratch(len: usize) -> Scratch {
    let mut buf = FREE.with(|free| {
        let mut free = free.borrow_mut();
        // The smallest idle buffer that is large enough, else the largest (to grow).
        let fit = free.iter().enumerate().filter(|(_, b)| b.len() >= len).min_by_key(|(_, b)| b.len()).map(|(i, _)| i);
        let pick = fit.or_else(|| free.iter().enumerate().max_by_key(|(_, b)| b.len()).map(|(i, _)| i));
        pick.map(|i| free.swap_remove(i)).unwrap_or_default()
    });
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    Scratch { buf, len }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        FREE.with(|free| {
            let mut free = free.borrow_mut();
            free.push(buf);
            if free.len() > KEEP {
                let smallest = free.iter().enumerate().min_by_key(|(_, b)| b.len()).map(|(i, _)| i).expect("non-empty");
                free.swap_remove(smallest);
            }
        });
    }
}

impl Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[..self.len]
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[..self.len]
    }
}
