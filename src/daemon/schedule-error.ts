import { ConfigError } from '../os/errors.js';

/**
 * A schedule problem. `code`: E_SCHEDULE_INVALID (bad field; 400), E_SCHEDULE_EXISTS
 * (409), E_NO_SUCH_SCHEDULE (404), E_SCHEDULES_FILE (the persisted file is unreadable
 * or invalid: the supervisor refuses to start). `details.field` names the path.
 */
export class ScheduleError extends ConfigError {}

export function invalid(field: string, message: string): ScheduleError {
  return new ScheduleError('E_SCHEDULE_INVALID', `${field}: ${message}`, { field });
}

