//! The window of in-flight requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The window of in-flight requests; resizable while permits are held.
pub struct Window {
    sem: Arc<Semaphore>,
    size: AtomicUsize,
    resize: Mutex<()>,
}

impl Window {
    pub fn new(size: usize) -> Self {
        let size = size.max(1);
        Self {
            sem: Arc::new(Semaphore::new(size)),
            size: AtomicUsize::new(size),
            resize: Mutex::new(()),
        }
    }

    pub fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    pub fn available(&self) -> usize {
        self.sem.available_permits()
    }

    /// A slot; None once the window is closed (the session ended).
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.sem.clone().acquire_owned().await.ok()
    }

    pub fn close(&self) {
        self.sem.close();
    }

    /// Grows at once; shrinks by retiring permits as they come back.
    pub fn resize(&self, new: usize) {
        let new = new.max(1);
        let _g = self.resize.lock().expect("window resize");
        let old = self.size.swap(new, Ordering::Relaxed);
        if new > old {
            self.sem.add_permits(new - old);
        } else if new < old {
            let mut debt = old - new;
            debt -= self.sem.forget_permits(debt);
            if debt > 0 {
                let sem = self.sem.clone();
                tokio::spawn(async move {
                    if let Ok(p) = sem.acquire_many_owned(debt as u32).await {
                        p.forget();
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn window_grows_and_shrinks_in_place() {
        let w = Window::new(2);
        let a = w.acquire().await.unwrap();
        let b = w.acquire().await.unwrap();
        assert_eq!(w.available(), 0);
        w.resize(4);
        assert_eq!(w.available(), 2);
        w.resize(1);
        // 2 available permits are forgotten at once; one more is retired when `a` returns
        assert_eq!(w.available(), 0);
        drop(a);
        // The retiring task takes `a`'s permit once it runs: poll for that with a deadline.
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.available() != 0 {
            assert!(Instant::now() < deadline, "a's permit was never retired");
            tokio::task::yield_now().await;
        }
        assert_eq!(w.size(), 1);
        // With the debt paid, the last returned permit leaves exactly the new size available.
        drop(b);
        assert_eq!(w.available(), 1);
    }
}
