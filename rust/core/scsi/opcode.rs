// SPDX-License-Identifier: GPL-2.0

//! SCSI operation codes and service actions used by the emulation (SPC-4,
//! SBC-3 numbering).

/// TEST UNIT READY.
pub(crate) const TEST_UNIT_READY: u8 = 0x00;
/// REQUEST SENSE.
pub(crate) const REQUEST_SENSE: u8 = 0x03;
/// FORMAT UNIT.
pub(crate) const FORMAT_UNIT: u8 = 0x04;
/// READ(6).
pub(crate) const READ_6: u8 = 0x08;
/// WRITE(6).
pub(crate) const WRITE_6: u8 = 0x0A;
/// INQUIRY.
pub(crate) const INQUIRY: u8 = 0x12;
/// MODE SELECT(6).
pub(crate) const MODE_SELECT_6: u8 = 0x15;
/// RESERVE(6) (SPC-2).
pub(crate) const RESERVE_6: u8 = 0x16;
/// RELEASE(6) (SPC-2).
pub(crate) const RELEASE_6: u8 = 0x17;
/// MODE SENSE(6).
pub(crate) const MODE_SENSE_6: u8 = 0x1A;
/// START STOP UNIT.
pub(crate) const START_STOP_UNIT: u8 = 0x1B;
/// RECEIVE DIAGNOSTIC RESULTS.
pub(crate) const RECEIVE_DIAGNOSTIC: u8 = 0x1C;
/// SEND DIAGNOSTIC.
pub(crate) const SEND_DIAGNOSTIC: u8 = 0x1D;
/// PREVENT ALLOW MEDIUM REMOVAL.
pub(crate) const PREVENT_ALLOW: u8 = 0x1E;
/// READ CAPACITY(10).
pub(crate) const READ_CAPACITY_10: u8 = 0x25;
/// READ(10).
pub(crate) const READ_10: u8 = 0x28;
/// WRITE(10).
pub(crate) const WRITE_10: u8 = 0x2A;
/// WRITE AND VERIFY(10).
pub(crate) const WRITE_VERIFY_10: u8 = 0x2E;
/// VERIFY(10).
pub(crate) const VERIFY_10: u8 = 0x2F;
/// PRE-FETCH(10).
pub(crate) const PRE_FETCH_10: u8 = 0x34;
/// SYNCHRONIZE CACHE(10).
pub(crate) const SYNCHRONIZE_CACHE_10: u8 = 0x35;
/// READ DEFECT DATA(10).
pub(crate) const READ_DEFECT_DATA_10: u8 = 0x37;
/// WRITE BUFFER.
pub(crate) const WRITE_BUFFER: u8 = 0x3B;
/// READ BUFFER(10).
pub(crate) const READ_BUFFER_10: u8 = 0x3C;
/// READ LONG(10).
pub(crate) const READ_LONG_10: u8 = 0x3E;
/// WRITE LONG(10).
pub(crate) const WRITE_LONG_10: u8 = 0x3F;
/// WRITE SAME(10).
pub(crate) const WRITE_SAME_10: u8 = 0x41;
/// UNMAP.
pub(crate) const UNMAP: u8 = 0x42;
/// LOG SELECT.
pub(crate) const LOG_SELECT: u8 = 0x4C;
/// LOG SENSE.
pub(crate) const LOG_SENSE: u8 = 0x4D;
/// MODE SELECT(10).
pub(crate) const MODE_SELECT_10: u8 = 0x55;
/// RESERVE(10) (SPC-2).
pub(crate) const RESERVE_10: u8 = 0x56;
/// RELEASE(10) (SPC-2).
pub(crate) const RELEASE_10: u8 = 0x57;
/// MODE SENSE(10).
pub(crate) const MODE_SENSE_10: u8 = 0x5A;
/// PERSISTENT RESERVE IN.
pub(crate) const PERSISTENT_RESERVE_IN: u8 = 0x5E;
/// PERSISTENT RESERVE OUT.
pub(crate) const PERSISTENT_RESERVE_OUT: u8 = 0x5F;
/// Variable-length CDB (READ(32), WRITE(32), ...).
pub(crate) const VARIABLE_LENGTH: u8 = 0x7F;
/// EXTENDED COPY.
pub(crate) const EXTENDED_COPY: u8 = 0x83;
/// RECEIVE COPY RESULTS / RECEIVE COPY OPERATING PARAMETERS (by service action).
pub(crate) const RECEIVE_COPY_RESULTS: u8 = 0x84;
/// Service action of 0x84: RECEIVE COPY OPERATING PARAMETERS.
pub(crate) const SA_RECEIVE_COPY_OPERATING_PARAMETERS: u8 = 0x03;
/// READ(16).
pub(crate) const READ_16: u8 = 0x88;
/// COMPARE AND WRITE.
pub(crate) const COMPARE_AND_WRITE: u8 = 0x89;
/// WRITE(16).
pub(crate) const WRITE_16: u8 = 0x8A;
/// ORWRITE(16).
pub(crate) const ORWRITE_16: u8 = 0x8B;
/// READ ATTRIBUTE.
pub(crate) const READ_ATTRIBUTE: u8 = 0x8C;
/// WRITE ATTRIBUTE.
pub(crate) const WRITE_ATTRIBUTE: u8 = 0x8D;
/// WRITE AND VERIFY(16).
pub(crate) const WRITE_VERIFY_16: u8 = 0x8E;
/// VERIFY(16).
pub(crate) const VERIFY_16: u8 = 0x8F;
/// PRE-FETCH(16).
pub(crate) const PRE_FETCH_16: u8 = 0x90;
/// SYNCHRONIZE CACHE(16).
pub(crate) const SYNCHRONIZE_CACHE_16: u8 = 0x91;
/// WRITE SAME(16).
pub(crate) const WRITE_SAME_16: u8 = 0x93;
/// READ BUFFER(16).
pub(crate) const READ_BUFFER_16: u8 = 0x9B;
/// SERVICE ACTION IN(16) (READ CAPACITY(16), GET LBA STATUS, ...).
pub(crate) const SERVICE_ACTION_IN_16: u8 = 0x9E;
/// Service action of 0x9E: READ CAPACITY(16).
pub(crate) const SA_READ_CAPACITY_16: u8 = 0x10;
/// Service action of 0x9E: GET LBA STATUS.
pub(crate) const SA_GET_LBA_STATUS: u8 = 0x12;
/// REPORT LUNS.
pub(crate) const REPORT_LUNS: u8 = 0xA0;
/// MAINTENANCE IN (REPORT TARGET PORT GROUPS, REPORT SUPPORTED ...).
pub(crate) const MAINTENANCE_IN: u8 = 0xA3;
/// Service action of 0xA3: REPORT TARGET PORT GROUPS.
pub(crate) const SA_REPORT_TARGET_PORT_GROUPS: u8 = 0x0A;
/// Service action of 0xA3: REPORT SUPPORTED OPERATION CODES.
pub(crate) const SA_REPORT_SUPPORTED_OPCODES: u8 = 0x0C;
/// Service action of 0xA3: REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS.
pub(crate) const SA_REPORT_SUPPORTED_TMFS: u8 = 0x0D;
/// Service action of 0xA3: REPORT TIMESTAMP.
pub(crate) const SA_REPORT_TIMESTAMP: u8 = 0x0F;
/// MAINTENANCE OUT (SET TARGET PORT GROUPS, ...).
pub(crate) const MAINTENANCE_OUT: u8 = 0xA4;
/// Service action of 0xA4: SET TARGET PORT GROUPS.
pub(crate) const SA_SET_TARGET_PORT_GROUPS: u8 = 0x0A;
/// READ(12).
pub(crate) const READ_12: u8 = 0xA8;
/// WRITE(12).
pub(crate) const WRITE_12: u8 = 0xAA;
/// READ MEDIA SERIAL NUMBER (SERVICE ACTION IN(12)).
pub(crate) const SERVICE_ACTION_IN_12: u8 = 0xAB;
/// WRITE AND VERIFY(12).
pub(crate) const WRITE_VERIFY_12: u8 = 0xAE;
/// VERIFY(12).
pub(crate) const VERIFY_12: u8 = 0xAF;

/// READ BUFFER / WRITE BUFFER mode: data.
pub(crate) const BUFFER_MODE_DATA: u8 = 0x02;
/// READ BUFFER mode: descriptor.
pub(crate) const BUFFER_MODE_DESCRIPTOR: u8 = 0x03;
/// READ BUFFER mode: echo buffer.
pub(crate) const BUFFER_MODE_ECHO: u8 = 0x0A;

/// Service action field (byte 1, bits 4..0) of a CDB, 0 when absent.
pub(crate) fn service_action(cdb: &[u8]) -> u8 {
    super::byte(cdb, 1) & 0x1F
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_action_masks() {
        assert_eq!(service_action(&[MAINTENANCE_IN, 0xEA]), 0x0A);
        assert_eq!(service_action(&[MAINTENANCE_IN]), 0);
        assert_eq!(service_action(&[]), 0);
    }
}
