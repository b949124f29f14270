//! Alert transitions on their way to people: the notification pipeline
//! (flapping, silences, inhibition, acknowledgements, grouping, history,
//! risk) and then the dispatcher (durable, retried deliveries to the
//! configured actions). `detect`, `run` and `serve` all go through one
//! [`Notifier`].
//!
//! A serving node shares its `Notifier` with the REST API: an
//! acknowledgement or a silence made over HTTP changes the very pipeline
//! detection feeds, so the next notification already leaves the alert out.
//! Without actions the pipeline still runs (the API's acknowledgements,
//! silences and notification history need it); what it produces is only
//! recorded and marked handed over, so the unsent list does not grow.
//!
//! State: the pipeline's history and snapshot in the state directory, the
//! dispatcher's outbox and dead letters in its `deliveries/` folder.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use inferwatch_alert::{
    ActionsFile, BuildContext, Dispatcher, DispatcherConfig, DispatcherStats, NotificationPipeline,
    NotifyConfig, SilencesFile,
};
use inferwatch_core::Alert;

use crate::ServerError;

/// The dispatcher's folder inside a notifier's state directory.
pub const DELIVERIES_DIR: &str = "deliveries";

/// Where a [`Notifier`] keeps its state and what it delivers to.
#[derive(Debug, Clone, Default)]
pub struct NotifyOptions {
    /// The actions file (webhook, alertmanager, slack, pagerduty, command,
    /// rollback); without one, notifications are only recorded.
    pub actions: Option<PathBuf>,
    /// Grouping, inhibition, flapping and risk settings; Alertmanager-like
    /// defaults apply when absent.
    pub notify: Option<PathBuf>,
    /// Silences loaded at start (added to those the state already holds).
    pub silences: Option<PathBuf>,
    /// Let `command` actions run programs.
    pub allow_commands: bool,
    /// The pipeline's state; deliveries are journaled under
    /// [`DELIVERIES_DIR`] in it.
    pub state_dir: PathBuf,
}

/// What the dispatcher had done when a [`Notifier`] finished.
#[derive(Debug, Clone)]
pub struct DeliveryTotals {
    /// Whether every delivery was settled within the grace period.
    pub idle: bool,
    /// Delivered, dead-lettered, retried and still pending.
    pub stats: DispatcherStats,
    /// The outbox the pending ones stay in for the next start.
    pub outbox: PathBuf,
}

/// The notification pipeline and, with actions, the dispatcher behind it.
pub struct Notifier {
    pipeline: Mutex<NotificationPipeline>,
    dispatcher: Option<Dispatcher>,
    /// How far past the last event the clock moves at the end of a finite
    /// input: long enough for every group's wait or interval to pass.
    drain: i64,
    state_dir: PathBuf,
}

impl Notifier {
    /// Opens the state (creating it); notifications a previous run recorded
    /// but did not hand over go out first.
    pub fn open(options: &NotifyOptions) -> Result<Notifier, ServerError> {
        let notify_config = match &options.notify {
            Some(path) => NotifyConfig::load(path)?,
            None => NotifyConfig::default(),
        };
        // Build the actions before opening any state, so a bad actions file
        // leaves nothing behind.
        let dispatcher = match &options.actions {
            Some(path) => {
                let file = ActionsFile::load(path)?;
                let actions =
                    file.build(&BuildContext::new().allow_commands(options.allow_commands))?;
                let config = DispatcherConfig::new(options.state_dir.join(DELIVERIES_DIR))
                    .with_settings(file.delivery.clone());
                Some(Dispatcher::start(config, actions)?)
            }
            None => None,
        };
        let mut pipeline = NotificationPipeline::open(notify_config.clone(), &options.state_dir)?;
        if let Some(path) = &options.silences {
            let silences = SilencesFile::load(path)?;
            pipeline.add_silences(&silences.silences)?;
        }
        let route = &notify_config.route;
        let drain = i64::try_from(route.group_wait.max(route.group_interval).as_nanos())
            .unwrap_or(i64::MAX);
        let notifier = Notifier {
            pipeline: Mutex::new(pipeline),
            dispatcher,
            drain,
            state_dir: options.state_dir.clone(),
        };
        {
            let mut pipeline = notifier.pipeline();
            let unsent = pipeline.unsent_notifications().to_vec();
            notifier.hand_over(&mut pipeline, &unsent)?;
        }
        Ok(notifier)
    }

    /// The pipeline, locked: acknowledgements, silences, history. Hold it
    /// briefly; detection waits for it.
    pub fn pipeline(&self) -> MutexGuard<'_, NotificationPipeline> {
        // A panic while holding the lock leaves the pipeline as its last
        // call left it (each call is applied whole or refused).
        self.pipeline.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pipeline's state directory (its history file is there).
    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }

    /// The dispatcher's counters (`None` without actions).
    pub fn delivery_stats(&self) -> Option<DispatcherStats> {
        self.dispatcher.as_ref().map(Dispatcher::stats)
    }

    /// Whether deliveries go to actions (else notifications are recorded only).
    pub fn has_actions(&self) -> bool {
        self.dispatcher.is_some()
    }

    /// Feeds transitions (event-time order) and moves the pipeline's clock
    /// to `now`, the largest event time seen; hands what is due to the
    /// dispatcher, which journals it before returning.
    pub fn observe(&self, alerts: &[Alert], now: Option<i64>) -> Result<(), ServerError> {
        let mut pipeline = self.pipeline();
        let notifications = match now {
            Some(now) => pipeline.process(alerts, now)?,
            None => pipeline.ingest(alerts)?,
        };
        self.hand_over(&mut pipeline, &notifications)
    }

    /// End of a finite input: moves the clock past the last event by the
    /// longest group timer and sends what that makes due.
    pub fn drain(&self, last_event: i64) -> Result<(), ServerError> {
        self.observe(&[], Some(last_event.saturating_add(self.drain)))
    }

    /// Waits up to `grace` for deliveries in flight and reports the totals
    /// (`None` without actions). What is left is delivered by the next start.
    pub fn settle(&self, grace: Duration) -> Option<DeliveryTotals> {
        let dispatcher = self.dispatcher.as_ref()?;
        let idle = dispatcher.wait_idle(grace);
        Some(DeliveryTotals {
            idle,
            stats: dispatcher.stats(),
            outbox: self
                .state_dir
                .join(DELIVERIES_DIR)
                .join(inferwatch_alert::dispatch::OUTBOX_FILE),
        })
    }

    fn hand_over(
        &self,
        pipeline: &mut NotificationPipeline,
        notifications: &[inferwatch_alert::Notification],
    ) -> Result<(), ServerError> {
        if notifications.is_empty() {
            return Ok(());
        }
        match &self.dispatcher {
            Some(dispatcher) => {
                inferwatch_alert::submit_notifications(dispatcher, pipeline, notifications)?;
            }
            None => {
                let ids: Vec<String> = notifications
                    .iter()
                    .map(|notification| notification.notification_id.clone())
                    .collect();
                pipeline.confirm_sent(&ids)?;
            }
        }
        Ok(())
    }
}
