use bytes::Bytes;
use util::marshal::*;

use super::*;
use crate::error::Result;

impl Context {
    pub fn decrypt_rtp_with_header(
        &mut self,
        encrypted: &[u8],
        header: &rtp::header::Header,
    ) -> Result<Bytes> {
        let auth_tag_len = self.cipher.rtp_auth_tag_len();
        if encrypted.len() < header.marshal_size() + auth_tag_len {
            return Err(Error::ErrTooShortRtp);
        }

        // Switchyard: an SSRC's state is kept only once a packet of it authenticated, and at
        // most MAX_REMOTE_SSRCS of them: the published code made one for every SSRC any
        // datagram named, before checking it, so garbage with random SSRCs grew the
        // context without bound.
        let mut fresh = None;
        let state = match self.srtp_ssrc_states.get_mut(&header.ssrc) {
            Some(state) => state,
            None => {
                if self.srtp_ssrc_states.len() >= MAX_REMOTE_SSRCS {
                    return Err(Error::SsrcLimit(header.ssrc));
                }
                fresh.insert(SrtpSsrcState {
                    ssrc: header.ssrc,
                    replay_detector: Some((self.new_srtp_replay_detector)()),
                    ..Default::default()
                })
            }
        };
        let (roc, diff, _) = state.next_rollover_count(header.sequence_number);
        if let Some(replay_detector) = &mut state.replay_detector {
            if !replay_detector.check(header.sequence_number as u64) {
                return Err(Error::SrtpSsrcDuplicated(
                    header.ssrc,
                    header.sequence_number,
                ));
            }
        }

        let dst = self.cipher.decrypt_rtp(encrypted, header, roc)?;
        let state = match fresh {
            Some(state) => self.srtp_ssrc_states.entry(header.ssrc).or_insert(state),
            None => self.get_srtp_ssrc_state(header.ssrc),
        };
        if let Some(replay_detector) = &mut state.replay_detector {
            replay_detector.accept();
        }
        state.update_rollover_count(header.sequence_number, diff);

        Ok(dst)
    }

    /// DecryptRTP decrypts a RTP packet with an encrypted payload
    pub fn decrypt_rtp(&mut self, encrypted: &[u8]) -> Result<Bytes> {
        let mut buf = encrypted;
        let header = rtp::header::Header::unmarshal(&mut buf)?;
        self.decrypt_rtp_with_header(encrypted, &header)
    }

    pub fn encrypt_rtp_with_header(
        &mut self,
        payload: &[u8],
        header: &rtp::header::Header,
    ) -> Result<Bytes> {
        let (roc, diff, ovf) = self
            .get_srtp_ssrc_state(header.ssrc)
            .next_rollover_count(header.sequence_number);
        if ovf {
            // ... when 2^48 SRTP packets or 2^31 SRTCP packets have been secured with the same key
            // (whichever occurs before), the key management MUST be called to provide new master key(s)
            // (previously stored and used keys MUST NOT be used again), or the session MUST be terminated.
            // https://www.rfc-editor.org/rfc/rfc3711#section-9.2
            return Err(Error::ErrExceededMaxPackets);
        }

        let dst = self.cipher.encrypt_rtp(payload, header, roc)?;

        self.get_srtp_ssrc_state(header.ssrc)
            .update_rollover_count(header.sequence_number, diff);

        Ok(dst)
    }

    /// Switchyard: encrypts the marshalled RTP packet in `packet` (whose header is
    /// `header`) in place and appends its tag, reusing the caller's buffer.
    pub fn encrypt_rtp_in_place(
        &mut self,
        packet: &mut Vec<u8>,
        header: &rtp::header::Header,
    ) -> Result<()> {
        let (roc, diff, ovf) = self
            .get_srtp_ssrc_state(header.ssrc)
            .next_rollover_count(header.sequence_number);
        if ovf {
            // RFC 3711 9.2, as in encrypt_rtp_with_header.
            return Err(Error::ErrExceededMaxPackets);
        }
        self.cipher.encrypt_rtp_in_place(packet, header, roc)?;
        self.get_srtp_ssrc_state(header.ssrc)
            .update_rollover_count(header.sequence_number, diff);
        Ok(())
    }

    /// EncryptRTP marshals and encrypts an RTP packet, writing to the dst buffer provided.
    /// If the dst buffer does not have the capacity to hold `len(plaintext) + 10` bytes, a new one will be allocated and returned.
    pub fn encrypt_rtp(&mut self, plaintext: &[u8]) -> Result<Bytes> {
        let mut buf = plaintext;
        let header = rtp::header::Header::unmarshal(&mut buf)?;
        self.encrypt_rtp_with_header(plaintext, &header)
    }
}
