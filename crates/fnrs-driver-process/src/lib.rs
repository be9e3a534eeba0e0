//! The process driver: functions as local processes in a bubblewrap sandbox with cgroup v1/v2 limits
