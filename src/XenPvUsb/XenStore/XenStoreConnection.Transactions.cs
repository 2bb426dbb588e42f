using System.Globalization;
using XenPvUsb.Logging;

namespace XenPvUsb.XenStore;

public sealed partial class XenStoreConnection
{
    private const int MaxTransactionAttempts = 20;

    /// <summary>TRANSACTION_START. Prefer <see cref="TransactAsync{T}"/>, which commits, retries and aborts for you.</summary>
    public async Task<XenStoreTransaction> StartTransactionAsync(CancellationToken cancellationToken = default)
    {
        byte[] reply = await RequestAsync(XsMessageType.TransactionStart, 0, XsCodec.EncodeStrings(string.Empty), null, cancellationToken)
            .ConfigureAwait(false);
        if (!uint.TryParse(XsCodec.DecodeString(reply), NumberStyles.None, CultureInfo.InvariantCulture, out uint id) || id == 0)
        {
            Abort(new InvalidDataException("xenstored returned a malformed transaction id."));
            throw CreateClosedException();
        }

        return new XenStoreTransaction(this, id);
    }

    /// <summary>TRANSACTION_END: commit (<c>T</c>) or discard (<c>F</c>). A conflicting commit throws EAGAIN.</summary>
    public async Task EndTransactionAsync(XenStoreTransaction transaction, bool commit, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        await RequestAsync(XsMessageType.TransactionEnd, TxId(transaction), XsCodec.EncodeStrings(commit ? "T" : "F"), null, cancellationToken)
            .ConfigureAwait(false);
    }

    public async Task TransactAsync(Func<XenStoreTransaction, Task> body, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(body);
        await TransactAsync<bool>(
            async tx =>
            {
                await body(tx).ConfigureAwait(false);
                return true;
            },
            cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Runs <paramref name="body"/> in a transaction and commits. On EAGAIN (a conflicting change, from the commit or
    /// from a request inside the body) the whole body runs again in a fresh transaction, up to 20 times with a small
    /// randomised backoff. If the body throws anything else the transaction is aborted and the exception propagates.
    /// </summary>
    public async Task<T> TransactAsync<T>(Func<XenStoreTransaction, Task<T>> body, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(body);
        for (int attempt = 1; ; attempt++)
        {
            XenStoreTransaction transaction = await StartTransactionAsync(cancellationToken).ConfigureAwait(false);
            T result;
            try
            {
                result = await body(transaction).ConfigureAwait(false);
            }
            catch (XenStoreException ex) when (ex.ErrorName == "EAGAIN" && attempt < MaxTransactionAttempts)
            {
                await TryDiscardAsync(transaction).ConfigureAwait(false);
                await BackoffAsync(attempt, cancellationToken).ConfigureAwait(false);
                continue;
            }
            catch
            {
                await TryDiscardAsync(transaction).ConfigureAwait(false);
                throw;
            }

            try
            {
                await EndTransactionAsync(transaction, commit: true, cancellationToken).ConfigureAwait(false);
                return result;
            }
            catch (XenStoreException ex) when (ex.ErrorName == "EAGAIN" && attempt < MaxTransactionAttempts)
            {
                await BackoffAsync(attempt, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private async Task TryDiscardAsync(XenStoreTransaction transaction)
    {
        try
        {
            await EndTransactionAsync(transaction, commit: false, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is XenStoreException or XenStoreConnectionClosedException)
        {
            // Nothing to undo: the transaction is gone either way.
        }
    }

    private Task BackoffAsync(int attempt, CancellationToken cancellationToken)
    {
        _logger.XsTransactionRetry(attempt);
        int maxDelayMs = Math.Min(1 << Math.Min(attempt, 6), 50);
        return Task.Delay(Random.Shared.Next(1, maxDelayMs + 1), cancellationToken);
    }
}
