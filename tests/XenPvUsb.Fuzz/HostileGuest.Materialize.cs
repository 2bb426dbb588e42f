using XenPvUsb.Usb;
using XenPvUsb.Usbif;
using XenPvUsb.Xen;
using static XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Fuzz;

public sealed partial class HostileGuest
{
    private const uint PortAndDeviceBits = USBIF_PIPE_PORT_MASK | (USBIF_PIPE_DEV_MASK << USBIF_PIPE_DEV_SHIFT);

    /// <summary>Turns a spec into the bytes of a request, resolving ids, addresses and grant refs against the run.</summary>
    private unsafe usbif_urb_request Materialize(RequestSpec s, out InFlight entry)
    {
        InFlight? target = null;
        lock (_inFlight)
        {
            if ((s.IdMode == IdMode.InFlight || s.Unlink is UnlinkMode.InFlight or UnlinkMode.InFlightOwnPipe) && _inFlight.Count > 0)
            {
                target = _inFlight[_random.Next(_inFlight.Count)];
            }
        }
        ushort id = s.IdMode switch
        {
            IdMode.Literal => s.Id,
            IdMode.InFlight when target is { } t => t.Id,
            _ => FreshId(),
        };
        int port = s.Port switch
        {
            PortSel.Stick => StickPort,
            PortSel.Keyboard => KeyboardPort,
            PortSel.Spare => SparePort,
            PortSel.Empty => 4 + (s.PortValue % (NumPorts - 3)),
            PortSel.Zero => 0,
            _ => s.PortValue & 31,
        };
        int addr = s.Addr switch
        {
            AddrSel.Model => port <= NumPorts ? _address[port] : 0,
            AddrSel.Zero => 0,
            _ => s.AddrValue & 0x7f,
        };
        uint pipe = (s.PipeRest & ~PortAndDeviceBits) | (uint)port | ((uint)addr << USBIF_PIPE_DEV_SHIFT);
        ulong union = s.Union;
        switch (s.Unlink)
        {
            case UnlinkMode.InFlight when target is { } t:
                pipe = t.Pipe | USBIF_PIPE_UNLINK;
                union = t.Id;
                break;
            case UnlinkMode.InFlightOwnPipe when target is { } t:
                union = t.Id;
                break;
        }

        var req = new usbif_urb_request { id = id, pipe = pipe, transfer_flags = s.TransferFlags, u_ctrl = union };
        int n = Math.Min(s.Segments.Length, USBIF_MAX_SEGMENTS_PER_REQUEST);
        int sum = 0;
        for (int i = 0; i < n; i++)
        {
            SegSpec seg = s.Segments[i];
            int page = seg.Page % RequestGenerators.PoolPages;
            uint gref = seg.Kind switch
            {
                GrantKind.Writable => _writableRefs[page].Value,
                GrantKind.ReadOnly => _readOnlyRefs[page].Value,
                GrantKind.Foreign => _foreignRefs[page].Value,
                GrantKind.Revoked => _revokedRefs[page].Value,
                GrantKind.Reserved => (uint)page,
                GrantKind.UrbRingPage => _frontend.RingRefs.Urb.Value,
                _ => seg.Literal,
            };
            req.seg[i] = new usbif_request_segment { gref = gref, offset = seg.Offset, length = seg.Length };
            if (i < s.DataSegments)
            {
                sum += seg.Length;
            }
        }
        if (s.Origin.StartsWith("bulk-out", StringComparison.Ordinal) && n > 0 && s.Segments[0].Kind is GrantKind.ReadOnly or GrantKind.Writable)
        {
            // A command block for the stick in the first data page (the union carried which one).
            int which = (int)(union & 0xff);
            SegSpec first = s.Segments[0];
            nint page = first.Kind == GrantKind.ReadOnly ? _readOnlyPages[first.Page % RequestGenerators.PoolPages] : _writablePages[first.Page % RequestGenerators.PoolPages];
            if (which < RequestGenerators.Cbws.Length && first.Offset + 31 <= RequestGenerators.PageSize)
            {
                RequestGenerators.Cbws[which].CopyTo(new Span<byte>((byte*)page + first.Offset, 31));
            }
            if (s.Origin == "bulk-out")
            {
                req.u_ctrl = 0;
            }
        }
        req.nr_buffer_segs = s.SegCount ?? (ushort)s.DataSegments;
        req.buffer_length = s.LengthMode switch
        {
            LengthMode.Consistent => (ushort)sum,
            LengthMode.Delta => (ushort)(sum + s.LengthValue),
            _ => (ushort)s.LengthValue,
        };

        entry = Describe(req, s.Origin, s.SelfHarm);
        return req;
    }

    /// <summary>What the model records of a request: the validator's verdict and how long its data stage is.</summary>
    private static InFlight Describe(in usbif_urb_request req, string origin, bool selfHarm = false)
    {
        UrbRequestVerdict verdict = UrbRequestValidator.Validate(in req, NumPorts);
        int maxLength = 0;
        if (verdict.IsValid && !verdict.IsUnlink)
        {
            maxLength = verdict.DataLength;
            if (verdict.Pipe.Type == UsbTransferType.Control)
            {
                maxLength = Math.Min(maxLength, (int)(req.u_ctrl >> 48));
            }
        }
        return new InFlight(req.id, req.pipe, maxLength, verdict.Reason, selfHarm, verdict.IsUnlink, origin, selfHarm, req.u_ctrl);
    }

    /// <summary>A control request of the guest's own (not fuzzed), sent raw and waited for. Returns its status, or null if unanswered.</summary>
    private async Task<int?> ControlAsync(int port, int address, ulong setup, int dataLength = 0)
    {
        var req = new usbif_urb_request
        {
            id = FreshId(),
            pipe = UsbifPipe.Create(port, address, 0, (setup & 0x80) != 0, UsbTransferType.Control).Value,
            u_ctrl = setup,
        };
        if (dataLength > 0)
        {
            req.nr_buffer_segs = 1;
            req.buffer_length = (ushort)dataLength;
            req.seg[0] = new usbif_request_segment { gref = _writableRefs[7].Value, offset = 0, length = (ushort)dataLength };
        }
        int? status = null;
        ushort id = req.id;
        if (!Send(req, Describe(req, "resync"), push: true))
        {
            return null;
        }
        _frontend.Kick();
        // Watch for this id's answer among the others.
        bool answered = await WaitAnsweredAsync(s_answerLimit, () => _inFlightCount[id] == 0).ConfigureAwait(false);
        if (answered && _inFlightCount[id] == 0)
        {
            status = 0;
        }
        return status;
    }

    /// <summary>Puts the devices back in a known state: a fresh address, configuration 1, halts cleared, the stick's transport reset.</summary>
    private async Task ResyncAsync()
    {
        _stats.Count("ops:resync");
        await UnlinkAllAsync().ConfigureAwait(false);
        foreach (int port in _spareAttached ? [StickPort, KeyboardPort, SparePort] : new[] { StickPort, KeyboardPort })
        {
            if (!_frontend.IsConnected)
            {
                return;
            }
            int address = NextAddress();
            ulong setAddress = RequestGenerators.Setup(0x00, 5, (ushort)address, 0, 0);
            // The backend takes SET_ADDRESS at address 0 or at the device's current one.
            if (await ControlAsync(port, 0, setAddress).ConfigureAwait(false) is null)
            {
                return;
            }
            _address[port] = address;
            await ControlAsync(port, address, RequestGenerators.Setup(0x00, 9, 1, 0, 0)).ConfigureAwait(false);
            await ControlAsync(port, address, RequestGenerators.Setup(0x02, 1, 0, 0x81, 0)).ConfigureAwait(false);
            if (port == StickPort)
            {
                await ControlAsync(port, address, RequestGenerators.Setup(0x02, 1, 0, 0x02, 0)).ConfigureAwait(false);
                await ControlAsync(port, address, RequestGenerators.Setup(0x21, 0xff, 0, 0, 0)).ConfigureAwait(false);
            }
        }
    }

    private int NextAddress()
    {
        _nextAddress = _nextAddress % 120 + 1;
        return _nextAddress + 1;
    }
}
